#!/usr/bin/env node
'use strict';
// Entry point for `npx weft`: runs the compiled CLI (npm install builds dist/).
require('../dist/src/cli/main.js').main(process.argv.slice(2));
