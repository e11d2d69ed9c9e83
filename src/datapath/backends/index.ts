import type { NetworkConfig } from '../../control/netconfig';
import type { Backend } from '../backend';
import { UDP_DEFAULT_PORT, UdpBackend } from './udp';

export interface BackendSetup {
  backend: Backend;
  /** Underlay port the backend listens and sends on. */
  port: number;
}

/** Pick the backend named by net-conf.json's Backend.Type. */
export function createBackend(config: NetworkConfig): BackendSetup {
  const type = config.backend.type;
  switch (type) {
    case 'udp':
      return { backend: new UdpBackend(), port: config.backend.port ?? UDP_DEFAULT_PORT };
    default:
      throw new Error(`Backend.Type "${type}" has no datapath in this build yet (available: udp)`);
  }
}
