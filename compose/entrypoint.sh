#!/usr/bin/env bash
# Entrypoint of the compose lab image: `weft-entrypoint control|daemon|etcd|healthcheck`.
#
#   control      weft control on :7000. Writes net-conf.json from WEFT_BACKEND (and WEFT_NETWORK);
#                with the etcd profile it keeps its leases in etcd and puts that net-conf at
#                flannel's /coreos.com/network/config (weft control does so if the key is absent).
#   daemon       weft daemon (on weft control, or with the etcd profile straight on etcd), then one
#                pod: a network namespace "pod" attached through weft-cni (which hands the node's
#                subnet.env to the CNI bridge + host-local plugins), as kubelet attaches a pod.
#   etcd         one etcd 3.4 member (Debian's), the etcd profile's lease store.
#   healthcheck  exit 0 once this node's daemon is ready and its pod is attached.
#
# Environment (the compose file passes these through):
#   WEFT_BACKEND   udp | vxlan | ipip | host-gw (default udp): the net-conf's Backend.Type
#   WEFT_NETWORK   the cluster network (default 10.244.0.0/16), split into /24 leases
#   WEFT_PROFILES  compose's COMPOSE_PROFILES; "etcd" in it puts the lab on etcd; "prometheus" in
#                  it has control serve /metrics on :7001 and each daemon its health server (with
#                  /metrics) on every address, for the prometheus service to scrape
#   WEFT_INSPECT   1 (default): the daemon runs under node --inspect=0.0.0.0:9229; 0: it does not
#   WEFT_LOG_LEVEL pino level for weft (default info)
set -euo pipefail

WEFT=/opt/weft/bin/weft.js
CONTROL_HOST=control
CONTROL_PORT=7000
ETCD_URL=http://etcd:2379
HEALTHZ_PORT=9090
SUBNET_ENV=/run/flannel/subnet.env
NET_CONF=/run/weft/net-conf.json
POD_READY=/run/weft/pod-ready
CNI_CONFLIST=/etc/cni/net.d/10-weft.conflist
# weft-cni first (the Dockerfile links it into /opt/cni/bin), then Debian's reference plugins.
CNI_PATH_DIRS=/opt/cni/bin:/usr/lib/cni
# The backend names, from weft's backend table (src/datapath/backends/index.ts): the one list.
BACKENDS=$(node -p "require('/opt/weft/dist/src/datapath/backends').BACKEND_TYPES.join(' ')")
WAIT_S=${WEFT_WAIT_S:-120}

say() { echo "weft-entrypoint: $*" >&2; }
die() {
  say "$*"
  exit 2
}

backend=${WEFT_BACKEND:-udp}
network=${WEFT_NETWORK:-10.244.0.0/16}
log_level=${WEFT_LOG_LEVEL:-info}

registry=control
case ",${WEFT_PROFILES:-}," in *,etcd,*) registry=etcd ;; esac
prometheus=0
case ",${WEFT_PROFILES:-}," in *,prometheus,*) prometheus=1 ;; esac
CONTROL_METRICS_PORT=7001

check_backend() {
  case " $BACKENDS " in
    *" $backend "*) ;;
    *) die "WEFT_BACKEND=\"$backend\" is not a weft backend; use one of: ${BACKENDS// /, }" ;;
  esac
  [[ $network =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || die "WEFT_NETWORK=\"$network\" is not an IPv4 CIDR like 10.244.0.0/16"
}

# Wait up to WAIT_S for a command to succeed; $1 says what we wait for.
wait_for() {
  local what=$1 i
  shift
  for ((i = 0; i < WAIT_S * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "gave up after ${WAIT_S}s waiting for $what"
}

run_control() {
  check_backend
  local metrics=()
  [ $prometheus = 1 ] && metrics=(--metrics-listen "0.0.0.0:$CONTROL_METRICS_PORT")
  mkdir -p "$(dirname "$NET_CONF")" /var/lib/weft
  printf '{\n  "Network": "%s",\n  "Backend": { "Type": "%s" }\n}\n' "$network" "$backend" >"$NET_CONF"
  say "net-conf: Network $network, Backend.Type $backend; leases in $([ $registry = etcd ] && echo "etcd ($ETCD_URL)" || echo /var/lib/weft)"
  if [ $registry = etcd ]; then
    wait_for "etcd at $ETCD_URL" etcdctl --endpoints "$ETCD_URL" --dial-timeout 2s endpoint health
    # etcd's address rather than its name: given a DNS name, weft control logs "stopped" on
    # SIGTERM but its process lingers until Docker kills it 10 s later (a name-only effect, not
    # seen with an IP; the daemons exit explicitly and are not affected).
    local etcd_ip
    etcd_ip=$(getent hosts etcd | awk '{ print $1; exit }')
    exec node "$WEFT" control --listen "0.0.0.0:$CONTROL_PORT" --etcd-endpoints "http://$etcd_ip:2379" \
      --net-config-path "$NET_CONF" --log-level "$log_level" "${metrics[@]}"
  fi
  exec node "$WEFT" control --listen "0.0.0.0:$CONTROL_PORT" --state-dir /var/lib/weft \
    --net-config-path "$NET_CONF" --log-level "$log_level" "${metrics[@]}"
}

run_etcd() {
  # The nodes learn about etcd from COMPOSE_PROFILES too; with `--profile etcd` alone they would
  # stay on weft control while etcd ran beside them unused.
  [ $registry = etcd ] || die "the etcd service needs COMPOSE_PROFILES=etcd (not --profile etcd): the nodes read it to run on etcd"
  mkdir -p /var/lib/etcd
  exec etcd --name etcd --data-dir /var/lib/etcd/member \
    --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster etcd=http://127.0.0.1:2380 --logger zap --log-outputs stderr
}

# The pod: a network namespace attached as kubelet attaches one through a container runtime. The
# node's CNI config is a conflist naming weft-cni (installed in /opt/cni/bin, a node's usual CNI
# bin dir); the runtime hands the plugin its entry with the list's name and cniVersion, and
# weft-cni builds the bridge + host-local delegate config from subnet.env as flannel's CNI plugin
# does (cni0 as the pod gateway .1, host-local IPAM over the node's subnet, the cluster network
# routed via the gateway, the pod MTU = FLANNEL_MTU) and runs Debian's bridge plugin with it. The
# delegate's ipMasq is off: pods keep their own addresses across the overlay (flannel's default,
# ipMasq = !FLANNEL_IPMASQ, would have the bridge masquerade traffic to other nodes' pods too).
attach_pod() {
  local FLANNEL_NETWORK FLANNEL_SUBNET FLANNEL_MTU FLANNEL_IPMASQ conf out
  # shellcheck disable=SC1090
  . "$SUBNET_ENV"
  mkdir -p "$(dirname "$CNI_CONFLIST")"
  printf '{\n  "cniVersion": "1.0.0",\n  "name": "weft",\n  "plugins": [\n    { "type": "weft-cni", "subnetFile": "%s", "delegate": { "bridge": "cni0", "ipMasq": false } }\n  ]\n}\n' \
    "$SUBNET_ENV" >"$CNI_CONFLIST"
  # What the runtime derives from the conflist for its first plugin (CNI spec section 3).
  conf=$(node -e 'const l = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    process.stdout.write(JSON.stringify({ cniVersion: l.cniVersion, name: l.name, ...l.plugins[0] }));' "$CNI_CONFLIST")
  ip netns add pod
  ip netns exec pod ip link set lo up
  # As the netns lab's pods (src/lab/netns.ts POD_SYSCTLS): loose reverse-path check, no IPv6.
  ip netns exec pod sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  if ! out=$(CNI_COMMAND=ADD CNI_CONTAINERID="pod-$(hostname)" CNI_NETNS=/run/netns/pod CNI_IFNAME=eth0 \
    CNI_PATH="$CNI_PATH_DIRS" /opt/cni/bin/weft-cni <<<"$conf"); then
    say "CNI ADD through weft-cni failed: $out"
    return 1
  fi
  pod_ip=$(ip netns exec pod ip -4 -o addr show dev eth0 | awk '{ print $4; exit }')
  # Every pod serves iperf3, so `pod iperf3 -c <other pod>` works from any node.
  ip netns exec pod iperf3 -s -D --logfile /run/weft/iperf3.log
  touch "$POD_READY"
  say "pod attached: eth0 $pod_ip in netns \"pod\" (subnet $FLANNEL_SUBNET, MTU $FLANNEL_MTU); run things in it with: pod CMD"
}

run_node() {
  check_backend
  mkdir -p /run/weft "$(dirname "$SUBNET_ENV")"
  rm -f "$POD_READY"
  # The underlay address is the one this container reaches the control plane from (flanneld
  # takes the default route's interface; here the default route, if any, is the inspector
  # network's, which carries no lab traffic).
  local target=$CONTROL_HOST route dev public_ip
  [ $registry = etcd ] && target=etcd
  wait_for "the name \"$target\" to resolve (is that service running?)" getent hosts "$target"
  route=$(ip -4 -o route get "$(getent hosts "$target" | awk '{ print $1; exit }')")
  dev=$(awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }' <<<"$route")
  public_ip=$(awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }' <<<"$route")
  [ -n "$dev" ] && [ -n "$public_ip" ] || die "cannot tell the underlay interface from: $route"
  # No way out of the lab: Docker gives a default route through the inspector network (the one
  # that makes 127.0.0.1:9229 reachable from the host); pods and nodes have no business there.
  if ip -4 route show default | grep -q .; then ip -4 route del default; fi

  # weft daemon sets accept_local on its TUN through /proc/sys, which Docker mounts read-only.
  # The node holds CAP_SYS_ADMIN anyway (for the pod's namespace), and net.* under /proc/sys is
  # this container's own network namespace.
  if awk '$5 == "/proc/sys" && $6 ~ /(^|,)ro(,|$)/ { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    mount -o remount,rw,bind /proc/sys
  fi

  # No --healthz-ip: the health server stays on the daemon's default 127.0.0.1, because everything
  # that reads it runs in this container (the healthcheck below, `docker compose exec ... weft
  # status`), and /status is nobody else's business. Unless the prometheus profile is on: then
  # the prometheus service scrapes /metrics over the underlay, and 0.0.0.0 keeps 127.0.0.1 working.
  local args=(daemon --public-ip "$public_ip" --iface "$dev" --subnet-file "$SUBNET_ENV" --healthz-port "$HEALTHZ_PORT" --log-level "$log_level")
  [ $prometheus = 1 ] && args+=(--healthz-ip 0.0.0.0)
  if [ $registry = etcd ]; then args+=(--etcd-endpoints "$ETCD_URL"); else args+=(--control "$CONTROL_HOST:$CONTROL_PORT"); fi
  local node_flags=()
  [ "${WEFT_INSPECT:-1}" = 1 ] && node_flags+=(--inspect=0.0.0.0:9229)
  say "weft daemon: public IP $public_ip on $dev, $([ $registry = etcd ] && echo "etcd $ETCD_URL" || echo "control $CONTROL_HOST:$CONTROL_PORT")${node_flags:+, inspector on :9229}"
  rm -f "$SUBNET_ENV"
  node "${node_flags[@]}" "$WEFT" "${args[@]}" &
  daemon=$!
  # This shell stays PID 1 to attach the pod once the lease exists; signals go to the daemon,
  # which removes its TUN and routes on SIGTERM.
  trap 'kill -TERM "$daemon" 2>/dev/null || true' TERM INT

  local i
  for ((i = 0; i < WAIT_S * 5; i++)); do
    [ -s "$SUBNET_ENV" ] && break
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$daemon" 2>/dev/null; then
    if [ -s "$SUBNET_ENV" ]; then
      attach_pod || { kill -TERM "$daemon"; wait "$daemon" || true; exit 1; }
    else
      say "no lease after ${WAIT_S}s (no $SUBNET_ENV); the pod is not attached"
    fi
  fi
  # wait returns early (status > 128) when a trapped signal arrives; wait again until the
  # daemon itself has exited, and exit with its status.
  local rc
  while :; do
    rc=0
    wait "$daemon" || rc=$?
    kill -0 "$daemon" 2>/dev/null || break
  done
  exit "$rc"
}

run_healthcheck() {
  [ -f "$POD_READY" ] || exit 1
  exec node -e '
    require("http").get("http://127.0.0.1:'"$HEALTHZ_PORT"'/readyz", { timeout: 2000 }, (r) => process.exit(r.statusCode === 200 ? 0 : 1))
      .on("error", () => process.exit(1)).on("timeout", () => process.exit(1));'
}

case "${1:-}" in
  control) run_control ;;
  daemon) run_node ;;
  etcd) run_etcd ;;
  healthcheck) run_healthcheck ;;
  *)
    if [ $# -gt 0 ] && command -v "$1" >/dev/null; then exec "$@"; fi
    echo "usage: weft-entrypoint control|daemon|etcd|healthcheck (or a command to run)" >&2
    exit 2
    ;;
esac
