// tshark in a lab namespace, started before the traffic it should see. tshark (dumpcap) takes a
// variable time to open the interface, seconds on a loaded machine: a fixed sleep before the
// traffic lost packets under load. tshark's "Capturing on 'IFACE'" comes before dumpcap has the
// interface open (packets sent right after it were still missed); "Capture started." (tshark 4's
// message on stderr) comes once dumpcap captures.
import { labExec, type ExecResult } from '../../src/lab';

export interface Capture {
  /** Resolves once tshark captures; rejects if it exits first (its stderr says why). */
  started: Promise<void>;
  done: Promise<ExecResult>;
}

export function tsharkCapture(prefix: string, target: string, tsharkArgs: string[], timeoutMs: number): Capture {
  let onStarted!: () => void;
  const started = new Promise<void>((resolve) => (onStarted = resolve));
  const done = labExec(prefix, target, ['tshark', ...tsharkArgs], {
    timeoutMs,
    onStderr: (soFar) => {
      if (soFar.includes('Capture started')) onStarted();
    },
  });
  return {
    started: Promise.race([started, done.then((r) => Promise.reject(new Error(`tshark exited before capturing (code ${r.code}): ${r.stderr.trim()}`)))]),
    done,
  };
}
