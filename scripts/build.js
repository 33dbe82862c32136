// Build: compile TypeScript to dist/, then prebundle the workflows so workers start in well under a second.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const root = path.resolve(__dirname, '..');
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', root], { stdio: 'inherit' });
const { bundleWorkflowCode } = require('@temporalio/worker');
bundleWorkflowCode({ workflowsPath: path.join(root, 'dist', 'workflows', 'index.js'), logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error } })
  .then(({ code }) => {
    fs.writeFileSync(path.join(root, 'dist', 'workflow-bundle.js'), code);
  })
  .catch((err) => {
    console.error(`build: bundling the workflows failed: ${err.message}`);
    process.exit(1);
  });
