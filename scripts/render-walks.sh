#!/usr/bin/env bash
# Re-renders the README's packet walks: every block between `<!-- walks:begin ARGS -->` and
# `<!-- walks:end -->` becomes the output of `weft trace ARGS --markdown`, all in one process
# (so the process-wide ICMP ID counter comes out the same every time). Run it after changing
# anything trace prints — encapsulation code included; test/unit/readme-walks.test.ts fails
# until the README matches.
set -euo pipefail
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.build.json
node -e '
const changed = require("./dist/src/cli/trace.js").renderWalksFile("README.md");
console.log(changed ? "README.md: packet walks re-rendered" : "README.md: packet walks already current");
'
