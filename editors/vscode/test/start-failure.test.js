'use strict';
// extension.js when the server cannot start (draftls.server.path points nowhere): activation
// still finishes, the status bar says failed, and the user is told which setting to fix.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');

const haveModules = fs.existsSync(path.join(__dirname, '..', 'node_modules', 'vscode-languageclient', 'package.json'));

test('a missing server executable fails cleanly', { skip: !haveModules && 'node_modules missing: run npm ci', timeout: 20000 }, async () => {
  const { createFakeVscode, installFakeVscode } = require('./fake-vscode');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'draftls-vscode-fail-'));
  const fake = createFakeVscode({ defaults: { 'server.path': path.join(dir, 'no-such-draftls'), 'server.args': ['serve'] }, workspaceFolder: dir });
  const uninstall = installFakeVscode(fake);
  const extension = require('../extension');
  const context = { subscriptions: [] };
  try {
    await extension.activate(context);
    const item = fake.statusItems[0];
    assert.match(item.text, /draftls: failed/);
    assert.ok(item.backgroundColor && item.backgroundColor.id === 'statusBarItem.errorBackground');
    const error = fake.messages.find((m) => m.kind === 'error' && m.text.includes('draftls.server.path'));
    assert.ok(error, JSON.stringify(fake.messages));
    assert.deepEqual(error.items, ['Open Settings']);
  } finally {
    await extension.deactivate();
    for (const d of context.subscriptions) d.dispose();
    uninstall();
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
});
