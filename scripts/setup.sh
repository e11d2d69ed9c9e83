#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: the Debian packages weft's lab, tests and
# benchmarks use, then npm dependencies, the native addon and the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(iproute2 iperf3 iputils-ping openvpn containernetworking-plugins tshark tcpdump procps ethtool etcd-server etcd-client openssl socat librsvg2-bin)
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

# npm install runs node-gyp (the addon) and then `prepare` (tsc). Re-run only when needed.
stamp=node_modules/.weft-install-stamp
if [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] || [ ! -f build/Release/weft_native.node ]; then
  npm install --no-audit --no-fund
  touch "$stamp"
fi
# Always rebuild the TypeScript: it is quick and keeps dist/ in step with src/.
npx tsc -p tsconfig.build.json
if [ native/weft.cc -nt build/Release/weft_native.node ]; then
  npx node-gyp rebuild >/dev/null
fi
