#!/usr/bin/env bash
# The base image compose/Dockerfile builds FROM, printed on stdout (the last line):
#
#   scripts/docker-base.sh           node:20-bookworm-slim if the engine has it or can pull it;
#                                    otherwise build (once) and print the local weft-base:bookworm
#   scripts/docker-base.sh --local   build weft-base:bookworm even if the pull would work
#   scripts/docker-base.sh --force   rebuild weft-base:bookworm even if it exists
#
# Why a local base: some machines reach Debian's mirror and the npm registry but not Docker Hub,
# so no image can be pulled. The local base is what node:20-bookworm-slim is to the Dockerfile —
# Debian 12 plus Node 20 with npm and Node's headers — built with debootstrap and Node copied
# from this machine (the same Node 20 that builds the addon here). It also carries the packages
# the Dockerfile would otherwise apt-get, so the image builds without any network but npm's.
# Needs a running engine (scripts/docker-engine.sh start) and root.
set -euo pipefail

UPSTREAM=node:20-bookworm-slim
LOCAL=weft-base:bookworm
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
  echo "$LOCAL"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { say "building $LOCAL needs root (debootstrap)"; exit 1; }
node_bin=$(readlink -f "$(command -v node)")
case "$(node -v)" in
  v20.*) ;;
  *) say "this machine's node is $(node -v), the image wants Node 20"; exit 1 ;;
esac
node_prefix=$(dirname "$(dirname "$node_bin")")
npm_dir=$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")
[ -f "$node_prefix/include/node/node_api.h" ] || { say "no Node headers under $node_prefix/include/node (node-gyp needs them)"; exit 1; }
[ -f "$npm_dir/bin/npm-cli.js" ] || { say "cannot find npm (looked in $npm_dir)"; exit 1; }

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
fi

root=$(mktemp -d -t weft-base-XXXXXX)
trap 'rm -rf "$root"' EXIT
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
chroot "$root" /usr/local/bin/node -v >/dev/null || { say "the copied node does not run in the base"; exit 1; }
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
  -m "weft local base: debootstrap bookworm minbase + Node $(node -v) from the build machine" \
  - "$LOCAL" >/dev/null
echo "$LOCAL"
