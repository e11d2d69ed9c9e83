/**
 * A view of `buf` that throws on an indexed read outside [rlo, rhi) or a write outside
 * [wlo, whi): a Proxy sees every indexed access, so a fuzz test proves a codec stays inside its
 * region rather than that it was lucky.
 */
export function fence(buf: Uint8Array, rlo: number, rhi: number, wlo: number, whi: number): Uint8Array {
  return new Proxy(buf, {
    get(t, p) {
      if (typeof p === 'string' && String(Number(p)) === p) {
        const i = Number(p);
        if (!(i >= rlo && i < rhi)) throw new Error(`read at ${i} outside [${rlo}, ${rhi})`);
        return t[i];
      }
      const v = Reflect.get(t, p, t);
      return typeof v === 'function' ? v.bind(t) : v;
    },
    set(t, p, v) {
      if (typeof p === 'string' && String(Number(p)) === p) {
        const i = Number(p);
        if (!(i >= wlo && i < whi)) throw new Error(`write at ${i} outside [${wlo}, ${whi})`);
        t[i] = v as number;
        return true;
      }
      return Reflect.set(t, p, v, t);
    },
  });
}

/** Reads and (if `writable`) writes allowed only inside [lo, hi). */
export function fenced(buf: Uint8Array, lo: number, hi: number, writable = false): Uint8Array {
  return writable ? fence(buf, lo, hi, lo, hi) : fence(buf, lo, hi, 0, 0);
}
