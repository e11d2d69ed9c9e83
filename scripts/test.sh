#!/usr/bin/env bash
# The test command (`npm test`, and .ci/run): set up, typecheck, lint, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# `npm test` itself may have been started by an older node; everything below runs on the one
# set-up chose (Node >= 22, normally /usr/local/bin/node), vitest's workers included.
. scripts/node.sh
weft_node_use || { echo "weft test: node on PATH is $(node -v), weft needs >= $WEFT_NODE_MIN" >&2; exit 1; }
echo "weft test: node $(node -v) ($(command -v node)), npm $(npm -v)"
npx tsc -p tsconfig.json --noEmit
# ESLint, the formatter check and the layering check (no cycles, no import up a layer).
npm run lint
report=$(mktemp -t weft-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
set +e
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
code=$?
set -e
# One plain summary line ("vitest: N passed, N failed, N skipped") for readers that do not
# know vitest's own summary format.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = (r.numPendingTests || 0) + (r.numTodoTests || 0);
  console.log(`vitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$report" 2>/dev/null || true
exit $code
