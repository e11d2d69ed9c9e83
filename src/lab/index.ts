// Programmatic API of the netns lab, for the CLI, integration tests and perf scripts.
export { labUp, underlaySide, checkEtcdMembers, type LabUpOptions } from './up';
export { labDown, labProcesses, type LabDownOptions } from './down';
export { labStatus, daemonStatus, daemonMetrics, formatStatus, type LabStatus, type NodeStatus, type PodStatus, type EtcdMemberStatus } from './status';
export {
  labExec,
  pingPair,
  pingMatrix,
  pingFailures,
  iperf3Pair,
  parsePing,
  parseIperf3,
  resolveAddress,
  formatBps,
  type ExecResult,
  type PingOptions,
  type PingResult,
  type IperfOptions,
  type IperfResult,
} from './traffic';
export { labDemo, formatDemo, type DemoResult } from './demo';
export type { PrometheusStatus } from './status';
export { prometheusApi, prometheusQuery, prometheusConfig, PROMETHEUS_JOBS, type PromSample } from './prometheus';
export {
  restartDaemon,
  startDaemon,
  stopDaemon,
  startControl,
  killControl,
  killEtcdMember,
  startEtcdMember,
  waitDaemonReady,
  waitDaemonPeers,
  waitControlReady,
  waitEtcdMemberHealthy,
} from './lifecycle';
export {
  readState,
  mustReadState,
  findNode,
  findPod,
  findEtcdMember,
  etcdEndpoints,
  addressOf,
  podsNotOn,
  targetNs,
  labDir,
  labNsPattern,
  DEFAULT_PREFIX,
  DEFAULT_UNDERLAY,
  DEFAULT_UNDERLAY_B,
  DEFAULT_NETWORK,
  TOPOLOGIES,
  REGISTRIES,
  ETCD_MEMBER_COUNTS,
  ETCD_MEMBER_PORTS,
  type RegistryKind,
  type Topology,
  type LabRouter,
  type LabState,
  type LabNode,
  type LabPod,
  type LabControl,
  type LabEtcdMember,
  type LabPrometheus,
  type LabRef,
  prefixOf,
} from './state';
export { BACKEND_TYPES, type BackendType } from '../datapath/backends';
export { readSubnetEnv } from './cni';
export type { SubnetEnv } from '../daemon/subnet-env';
export { contains, within, networkOf } from './addr';
