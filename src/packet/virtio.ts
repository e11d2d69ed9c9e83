// The virtio-net header (struct virtio_net_hdr, include/uapi/linux/virtio_net.h) that a TUN
// opened with IFF_VNET_HDR puts in front of every packet it hands over and expects in front of
// every packet written to it. Little-endian fields (virtio 1.0; tun(4) uses the host's order
// unless TUNSETVNETBE, and weft runs on little-endian hosts). The offload core that reads and
// writes these on the datapath is native/offload.cc; this is the TypeScript view for weft trace
// and the in-memory TUN.

export const VIRTIO_NET_HDR_LEN = 10;

/** flags: csum_start/csum_offset say where the checksum that holds only the pseudo-header sum is. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;

/** gso_type values (the ECN bit, 0x80, may be or-ed in for TCP: CWR set on the first segment). */
export const VIRTIO_NET_HDR_GSO = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5 } as const;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export interface VirtioNetHdr {
  flags: number;
  gsoType: number;
  /** Bytes of headers (IP + TCP/UDP) in front of the payload each segment repeats. */
  hdrLen: number;
  /** Payload bytes per segment. */
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function readVirtioNetHdr(buf: Uint8Array, off = 0): VirtioNetHdr {
  const v = new DataView(buf.buffer, buf.byteOffset + off, VIRTIO_NET_HDR_LEN);
  return {
    flags: v.getUint8(0),
    gsoType: v.getUint8(1),
    hdrLen: v.getUint16(2, true),
    gsoSize: v.getUint16(4, true),
    csumStart: v.getUint16(6, true),
    csumOffset: v.getUint16(8, true),
  };
}

export function writeVirtioNetHdr(buf: Uint8Array, off: number, h: VirtioNetHdr): void {
  const v = new DataView(buf.buffer, buf.byteOffset + off, VIRTIO_NET_HDR_LEN);
  v.setUint8(0, h.flags);
  v.setUint8(1, h.gsoType);
  v.setUint16(2, h.hdrLen, true);
  v.setUint16(4, h.gsoSize, true);
  v.setUint16(6, h.csumStart, true);
  v.setUint16(8, h.csumOffset, true);
}

const GSO_NAMES: Record<number, string> = { 0: 'NONE', 1: 'TCPV4', 3: 'UDP', 4: 'TCPV6', 5: 'UDP_L4' };

/** "NEEDS_CSUM, gso_type TCPV4, hdr_len 40, gso_size 1410, csum_start 20, csum_offset 16". */
export function formatVirtioNetHdr(h: VirtioNetHdr): string {
  const flags = h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM ? 'NEEDS_CSUM' : 'flags 0';
  const type =
    (GSO_NAMES[h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN] ?? `${h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN}`) + (h.gsoType & VIRTIO_NET_HDR_GSO_ECN ? '|ECN' : '');
  return `${flags}, gso_type ${type}, hdr_len ${h.hdrLen}, gso_size ${h.gsoSize}, csum_start ${h.csumStart}, csum_offset ${h.csumOffset}`;
}
