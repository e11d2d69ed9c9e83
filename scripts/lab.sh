#!/usr/bin/env bash
# The main job (`npm run lab`): set up, form a 3-node netns lab and push traffic through it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The node set-up chose (>= 22), whichever node ran `npm run lab`.
. scripts/node.sh
weft_node_use || { echo "weft lab: node on PATH is $(node -v), weft needs >= $WEFT_NODE_MIN" >&2; exit 1; }
exec node bin/weft.js lab demo "$@"
