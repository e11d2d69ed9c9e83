#!/usr/bin/env bash
# The test command (`npm test`, and .ci/run): set up, typecheck, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p tsconfig.json --noEmit
exec npx vitest run "$@"
