#!/usr/bin/env bash
# The main job (`npm run lab`): set up, form a 3-node netns lab and push traffic through it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node bin/weft.js lab demo "$@"
