'use strict';
// extension.js against the real `draftls serve`, through vscode-languageclient and a fake
// `vscode` module. Runs only when DRAFTLS_SERVER names the draftls executable (the pytest
// test in tests/editors/test_vscode.py sets it); DRAFTLS_TEST_MODEL picks the model
// (default "tiny", the random-weight test model: its drafts are noise, but they are drafts).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const manifest = require('../package.json');
const server = process.env.DRAFTLS_SERVER;
const model = process.env.DRAFTLS_TEST_MODEL || 'tiny';
const haveModules = fs.existsSync(path.join(root, 'node_modules', 'vscode-languageclient', 'package.json'));
const skip = !server ? 'DRAFTLS_SERVER is not set' : !haveModules ? 'node_modules missing: run npm ci' : false;

async function waitFor(what, predicate, timeoutMs) {
  const start = Date.now();
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('extension drives the real draftls server', { skip, timeout: 120000 }, async () => {
  const { createFakeVscode, installFakeVscode } = require('./fake-vscode');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'draftls-vscode-real-'));
  const defaults = {};
  for (const [key, prop] of Object.entries(manifest.contributes.configuration.properties)) {
    defaults[key.slice('draftls.'.length)] = prop.default;
  }
  const fake = createFakeVscode({ defaults, workspaceFolder: dir });
  Object.assign(fake.settings, {
    'server.path': server,
    'server.args': ['serve'],
    model,
    device: 'cpu',
    drafts: 2,
    maxNewTokens: 4,
    mode: 'line',
  });
  const uninstall = installFakeVscode(fake);
  const extension = require('../extension');
  const context = { subscriptions: [] };
  try {
    await extension.activate(context);
    const item = fake.statusItems[0];
    await waitFor('status ready', () => item.text.includes('draftls: ready') || item.text.includes('failed'), 90000);
    assert.match(item.text, new RegExp(`draftls: ready \\(${model}\\)`), String(item.tooltip));

    const file = path.join(dir, 'a.py');
    const text = 'import os\n\n\ndef main():\n    path = os.path.jo';
    fs.writeFileSync(file, text);
    const document = fake.openDocument(file, text);
    const position = new fake.vscode.Position(4, 21);
    const token = new fake.vscode.CancellationTokenSource().token;
    assert.equal(fake.inlineProviders.length, 1, 'the client registered an inline completion provider');
    const provider = fake.inlineProviders[0].provider;
    const result = await provider.provideInlineCompletionItems(document, position, { triggerKind: fake.vscode.InlineCompletionTriggerKind.Invoke }, token);
    const items = Array.isArray(result) ? result : result.items;
    assert.ok(items.length >= 1 && items.length <= 2, `1 or 2 drafts, got ${items.length}`);
    for (const draft of items) {
      assert.equal(typeof draft.insertText, 'string');
      assert.equal(draft.command.command, 'draftls.accepted');
      assert.ok(draft.range.end.line === 4 && draft.range.end.character >= 21, JSON.stringify(draft.range));
    }

    await fake.vscode.commands.executeCommand(items[0].command.command, ...(items[0].command.arguments || []));
    await waitFor('one acceptance in the tooltip', () => /\b1 accepted\b/.test(String(item.tooltip)), 10000);
  } finally {
    await extension.deactivate();
    for (const d of context.subscriptions) d.dispose();
    uninstall();
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
});
