#!/usr/bin/env bash
# Re-renders the packet walks in docs/architecture.md: every block between
# `<!-- walks:begin ARGS -->` and `<!-- walks:end -->` becomes the output of
# `weft trace ARGS --markdown`, all in one process (so the process-wide ICMP ID counter comes out
# the same every time). Run it after changing anything trace prints — encapsulation code
# included; test/unit/docs-walks.test.ts fails until the document matches.
set -euo pipefail
cd "$(dirname "$0")/.."
DOC=docs/architecture.md
npx tsc -p tsconfig.build.json
node -e '
const doc = process.argv[1];
const changed = require("./dist/src/cli/trace.js").renderWalksFile(doc);
console.log(changed ? doc + ": packet walks re-rendered" : doc + ": packet walks already current");
' "$DOC"
