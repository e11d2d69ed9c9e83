'use strict';
// `weft daemon` through its API (NodeDaemon from the compiled dist/) instead of the CLI, for
// tests that need a DaemonOptions value the command line cannot give yet (e.g.
// iptablesForwardRules: false). Run as the lab runs a daemon:
//   ip netns exec NS node api-daemon.cjs '{"control":"ADDR:PORT","publicIp":...}' SUBNET_FILE
// SUBNET_FILE is also in the JSON; it is repeated as its own argument so the lab's check that a
// pid is its own (a command-line argument inside the lab directory) holds.
const path = require('node:path');
const pino = require('pino');
const dist = path.join(__dirname, '..', '..', 'dist', 'src');
const { NodeDaemon } = require(path.join(dist, 'daemon', 'daemon.js'));
const { GrpcRegistry } = require(path.join(dist, 'control', 'client.js'));

const o = JSON.parse(process.argv[2]);
const logger = pino({ level: 'info', base: { node: o.publicIp } });
const daemon = new NodeDaemon({
  registry: new GrpcRegistry(o.control, { logger }),
  controlTarget: o.control,
  publicIp: o.publicIp,
  iface: o.iface,
  subnetFile: o.subnetFile,
  tunName: 'weft0',
  healthzIp: '127.0.0.1',
  healthzPort: o.healthzPort,
  renewMarginMs: 3_600_000,
  ipMasq: o.ipMasq,
  iptablesForwardRules: o.iptablesForwardRules,
  iptablesResyncS: o.iptablesResyncS ?? 5,
  offloads: { tun: true, gso: true, gro: true },
  logger,
});
const stop = (code) => {
  daemon.stop().then(
    () => process.exit(code),
    () => process.exit(1),
  );
};
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
daemon.onFatal(() => stop(1));
daemon.start().then(
  () => logger.info('ready'),
  (e) => {
    logger.error({ err: e.message }, 'start failed');
    stop(1);
  },
);
