#!/usr/bin/env node
// Entry point of the `pgferry` command: the compiled CLI in dist/ (built by `npm run setup` / `npm run build`).
const path = require('node:path');
const fs = require('node:fs');
const main = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
if (!fs.existsSync(main)) {
  process.stderr.write('pgferry: not built yet (dist/ is missing); run npm run setup (or npm run build)\n');
  process.exit(2);
}
require(main);
