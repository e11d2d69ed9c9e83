#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: the Debian packages weft's lab, tests and
# benchmarks use, Node 24 if the machine's node is older than 22 (scripts/node.sh: from the npm
# registry into /usr/local), then npm dependencies, the native addon and the TypeScript build.
# A caller that goes on to run node itself sources scripts/node.sh and calls weft_node_use after
# this, as scripts/test.sh and lab.sh do: this script's PATH does not outlive it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node.sh

PKGS=(iproute2 iperf3 iputils-ping openvpn containernetworking-plugins tshark tcpdump procps etcd-server etcd-client openssl socat librsvg2-bin iptables nftables prometheus)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "weft setup: missing Debian packages (${missing[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "weft setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node: weft wants >= 22 (package.json's engines). Where the node on PATH is older, install
# Node 24 under /usr/local; from here on every node, npm and npx below run on it, and node-gyp
# builds against its headers there (npm_config_nodedir), downloading none.
if ! weft_node_use; then
  weft_node_install
  weft_node_use || { echo "weft setup: node on PATH is $(node -v) after installing Node $WEFT_NODE_WANT; is $WEFT_NODE_PREFIX/bin on PATH?" >&2; exit 1; }
fi

# npm install runs node-gyp (the addon) and then `prepare` (tsc). Re-run only when needed.
# build/.weft-node-major: the Node major the addon was last built under.
node_stamp=build/.weft-node-major
node_major=$(weft_node_major)
stamp=node_modules/.weft-install-stamp
if [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] || [ ! -f build/Release/weft_native.node ]; then
  npm install --no-audit --no-fund
  touch "$stamp"
  echo "$node_major" >"$node_stamp"
fi
# Always rebuild the TypeScript: it is quick and keeps dist/ in step with src/.
npx tsc -p tsconfig.build.json
# Rebuild the addon when any of its sources is newer than it. The addon is N-API, so one built
# under another Node major still loads; rebuilding once when
# the major changes (a few seconds) keeps it built against the headers of the node that runs it.
newer_native=$(find native binding.gyp -newer build/Release/weft_native.node \( -name '*.cc' -o -name '*.h' -o -name binding.gyp \) 2>/dev/null | head -1)
if [ -n "$newer_native" ] || [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_major" ]; then
  npx node-gyp rebuild >/dev/null
  echo "$node_major" >"$node_stamp"
fi
