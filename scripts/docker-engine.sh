#!/usr/bin/env bash
# A Docker engine and docker-compose for the compose lab (compose/), idempotent.
#
#   scripts/docker-engine.sh start   install Debian's docker.io + docker-compose if missing, start
#                                    dockerd if no engine answers; prints "running" (an engine was
#                                    already up: nothing of ours to stop later) or "started"
#   scripts/docker-engine.sh stop    only if `start` started dockerd, and no container is running
#                                    (--force: even then): stop it and put back what it changed
#                                    in the root namespace (below); else does nothing
#   scripts/docker-engine.sh status  "running" or "stopped"
#
# Why the bookkeeping: these machines run no engine by default and no init system that could own
# one, so `start` runs dockerd itself. dockerd changes the root namespace as it starts: it turns
# net.ipv4.ip_forward on, sets iptables' FORWARD policy to DROP, adds its chains and NAT rules
# and a docker0 bridge, and it leaves all of that behind when it stops. `start` records the
# state before (in $STATE_DIR) and `stop` restores it, so a test that needed an engine leaves the
# machine as it found it. Images stay cached in /var/lib/docker.
set -euo pipefail

STATE_DIR=/run/weft-docker
LOG=/var/log/weft-dockerd.log
START_TIMEOUT_S=60

say() { echo "docker-engine: $*" >&2; }

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

install_missing() {
  local want=(docker.io docker-compose iptables) missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages (${missing[*]}); run as root or install them"
    exit 1
  fi
  say "installing ${missing[*]}"
  # docker.io's postinst would start the engine through its init script; we start it ourselves
  # below (and must know whether we did), so keep invoke-rc.d from starting services while apt
  # runs, the way Debian's own image builds do (policy-rc.d exit 101 = "not allowed").
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ $made_policy -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || { say "apt-get install ${missing[*]} failed"; exit $rc; }
}

forward_policy() { iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" { print $3; exit }'; }

start() {
  install_missing
  if engine_up; then
    echo running
    return 0
  fi
  if [ -f "$STATE_DIR/dockerd.pid" ] && kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null; then
    say "dockerd (pid $(cat "$STATE_DIR/dockerd.pid")) is running but not answering; see $LOG"
    exit 1
  fi
  mkdir -p "$STATE_DIR"
  # What dockerd will change, as it is now.
  sysctl -n net.ipv4.ip_forward >"$STATE_DIR/ip_forward"
  sysctl -n net.bridge.bridge-nf-call-iptables >"$STATE_DIR/bridge_nf_call_iptables" 2>/dev/null || rm -f "$STATE_DIR/bridge_nf_call_iptables"
  forward_policy >"$STATE_DIR/forward_policy"
  { iptables-save -t filter && iptables-save -t nat; } >"$STATE_DIR/iptables" 2>/dev/null || rm -f "$STATE_DIR/iptables"
  if ip link show docker0 >/dev/null 2>&1; then echo yes; else echo no; fi >"$STATE_DIR/docker0_existed"
  say "starting dockerd (log $LOG)"
  # setsid: dockerd (and the containerd it spawns) must not die with the shell or test that ran us.
  setsid dockerd >>"$LOG" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/dockerd.pid"
  local i
  for ((i = 0; i < START_TIMEOUT_S * 2; i++)); do
    if engine_up; then
      echo started
      return 0
    fi
    if ! kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null; then
      say "dockerd exited during start; last lines of $LOG:"
      tail -n 5 "$LOG" >&2
      restore
      exit 1
    fi
    sleep 0.5
  done
  say "dockerd did not answer within ${START_TIMEOUT_S}s; see $LOG"
  stop --force
  exit 1
}

# Put back what dockerd changed, from the record `start` made.
restore() {
  if [ -f "$STATE_DIR/iptables" ]; then
    # Whole filter and nat tables as they were: dockerd's chains, jumps and MASQUERADE rules go,
    # and so does the FORWARD DROP policy (nothing of weft's uses the root namespace's tables).
    iptables-restore <"$STATE_DIR/iptables" || say "could not restore iptables from $STATE_DIR/iptables"
  elif [ "$(cat "$STATE_DIR/forward_policy" 2>/dev/null)" = ACCEPT ]; then
    iptables -P FORWARD ACCEPT || true
  fi
  if [ -f "$STATE_DIR/ip_forward" ]; then sysctl -qw net.ipv4.ip_forward="$(cat "$STATE_DIR/ip_forward")" || true; fi
  if [ -f "$STATE_DIR/bridge_nf_call_iptables" ]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables="$(cat "$STATE_DIR/bridge_nf_call_iptables")" || true
  fi
  if [ "$(cat "$STATE_DIR/docker0_existed" 2>/dev/null)" = no ]; then ip link del docker0 2>/dev/null || true; fi
  rm -rf "$STATE_DIR"
}

stop() {
  [ -f "$STATE_DIR/dockerd.pid" ] || return 0
  local pid i n
  pid=$(cat "$STATE_DIR/dockerd.pid")
  # Someone else's containers (another test run, a lab being used) keep the engine in use.
  if [ "${1:-}" != --force ] && kill -0 "$pid" 2>/dev/null && engine_up; then
    n=$(docker ps -q | wc -l)
    if [ "$n" -gt 0 ]; then
      say "dockerd left running: $n container(s) still running (stop them, or: $0 stop --force)"
      return 0
    fi
  fi
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers (10 s grace each, in parallel) and its containerd first.
    for ((i = 0; i < 60; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd did not stop within 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
    fi
  fi
  restore
}

case "${1:-start}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  status) if engine_up; then echo running; else echo stopped; fi ;;
  *)
    echo "usage: $0 start | stop [--force] | status" >&2
    exit 2
    ;;
esac
