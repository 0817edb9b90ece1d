'use strict';
// extension.js end to end against a fake `vscode` module and a fake server process
// (test/fake-server.js): the real vscode-languageclient starts the server over stdio,
// sends initializationOptions, answers workspace/configuration, requests inline
// completions, runs `draftls.accepted` on accept, sends changed settings, and the status
// bar follows `draftls.status`. Needs node_modules (npm ci).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const manifest = require('../package.json');
const haveModules = fs.existsSync(path.join(root, 'node_modules', 'vscode-languageclient', 'package.json'));

function manifestDefaults() {
  const out = {};
  for (const [key, prop] of Object.entries(manifest.contributes.configuration.properties)) {
    out[key.slice('draftls.'.length)] = prop.default;
  }
  return out;
}

function serverDefaults() {
  const out = manifestDefaults();
  delete out['server.path'];
  delete out['server.args'];
  delete out['trace.server'];
  return out;
}

function readLog(file) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function waitFor(what, predicate, timeoutMs = 10000) {
  const start = Date.now();
  for (;;) {
    const value = predicate();
    if (value) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('extension drives a server through vscode-languageclient', { skip: !haveModules && 'node_modules missing: run npm ci', timeout: 30000 }, async () => {
  const { createFakeVscode, installFakeVscode } = require('./fake-vscode');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'draftls-vscode-'));
  const logFile = path.join(dir, 'server.log');
  const fake = createFakeVscode({ defaults: manifestDefaults(), workspaceFolder: dir });
  Object.assign(fake.settings, {
    'server.path': process.execPath,
    'server.args': [path.join(__dirname, 'fake-server.js'), logFile],
    drafts: 5,
    seed: 7,
    temperature: 'hot', // invalid: not sent, and the user is told
  });
  const uninstall = installFakeVscode(fake);
  const extension = require('../extension');
  const context = { subscriptions: [] };
  try {
    await extension.activate(context);

    // initialize carries the mapped settings and announces inline completion support.
    const init = readLog(logFile).find((m) => m.method === 'initialize');
    assert.ok(init, 'the server got initialize');
    const expected = { ...serverDefaults(), drafts: 5, seed: 7 };
    delete expected.temperature;
    assert.deepEqual(init.params.initializationOptions, expected);
    assert.ok(init.params.capabilities.textDocument.inlineCompletion, 'client announces inlineCompletion');
    assert.ok(fake.messages.some((m) => m.kind === 'warning' && m.text.includes('draftls.temperature')));

    // The server's workspace/configuration pull is answered with mapped settings only.
    const pulled = await waitFor('workspace/configuration answer', () => readLog(logFile).find((m) => m.id === 1000 && m.result));
    assert.deepEqual(pulled.result, [expected]);

    // The status bar goes from loading to ready, with the model.
    const item = fake.statusItems[0];
    assert.equal(item.command, 'draftls.showStatus');
    assert.ok(item.visible);
    await waitFor('status bar ready', () => item.text.includes('draftls: ready'));
    assert.match(item.text, /draftls: ready \(smollm2-135m\)/);

    // Inline completion: the provider registered by the client asks the server and returns
    // its drafts, each carrying the accept command.
    assert.equal(fake.inlineProviders.length, 1);
    const document = { uri: fake.vscode.Uri.file(path.join(dir, 'a.py')), languageId: 'python', version: 1 };
    const position = new fake.vscode.Position(3, 6);
    const token = new fake.vscode.CancellationTokenSource().token;
    const automatic = fake.vscode.InlineCompletionTriggerKind.Automatic;
    const result = await fake.inlineProviders[0].provider.provideInlineCompletionItems(document, position, { triggerKind: automatic }, token);
    const items = Array.isArray(result) ? result : result.items;
    assert.deepEqual(items.map((i) => i.insertText), ['append(x)', 'extend(xs)']);
    assert.equal(items[0].range.start.line, 3);
    assert.equal(items[0].range.start.character, 6);
    assert.equal(items[0].command.command, 'draftls.accepted');
    const request = readLog(logFile).find((m) => m.method === 'textDocument/inlineCompletion');
    assert.deepEqual(request.params.position, { line: 3, character: 6 });
    assert.equal(request.params.context.triggerKind, 2, 'LSP InlineCompletionTriggerKind.Automatic');

    // The status refreshes after a request...
    await waitFor('tooltip with the request', () => String(item.tooltip).includes('1 requests, 2 shown, 0 accepted'));

    // ...and after an accept: accepting runs the command, which the client forwards to the server.
    await fake.vscode.commands.executeCommand(items[0].command.command, ...items[0].command.arguments);
    const accept = readLog(logFile).find((m) => m.method === 'workspace/executeCommand' && m.params.command === 'draftls.accepted');
    assert.deepEqual(accept.params.arguments, [{ request: 1, draft: 0 }]);
    await waitFor('tooltip with the acceptance', () => String(item.tooltip).includes('1 accepted'));

    // A settings change reaches the server as didChangeConfiguration with mapped settings.
    fake.changeSettings({ drafts: 2, temperature: 0.2 });
    const change = await waitFor('didChangeConfiguration with drafts 2', () =>
      readLog(logFile).find((m) => m.method === 'workspace/didChangeConfiguration' && m.params.settings.draftls.drafts === 2),
    );
    assert.deepEqual(change.params.settings, { draftls: { ...serverDefaults(), drafts: 2, seed: 7, temperature: 0.2 } });

    // The status command shows a summary.
    await fake.vscode.commands.executeCommand('draftls.showStatus');
    const info = fake.messages.find((m) => m.kind === 'info');
    assert.match(info.text, /^draftls ready: smollm2-135m on torch\/cpu/);
    assert.deepEqual(info.items, ['Show Log', 'Restart']);

    // Changing the server command restarts the server: a new process, a new initialize.
    fake.changeSettings({ 'server.args': [path.join(__dirname, 'fake-server.js'), logFile, '--again'] });
    await waitFor('a second initialize', () => readLog(logFile).filter((m) => m.method === 'initialize').length === 2);
    await waitFor('status bar ready again', () => item.text.includes('draftls: ready'));
    const inits = readLog(logFile).filter((m) => m.method === 'initialize');
    assert.deepEqual(inits[1].params.initializationOptions, { ...serverDefaults(), drafts: 2, seed: 7, temperature: 0.2 });
    assert.equal(fake.inlineProviders.length, 1, 'the old client unregistered its provider');
  } finally {
    await extension.deactivate();
    for (const d of context.subscriptions) d.dispose();
    uninstall();
  }
  // The client sends exit after the shutdown answer; the server logs it a moment later.
  await waitFor('shutdown and exit', () => {
    const methods = readLog(logFile).map((m) => m.method);
    return methods.includes('shutdown') && methods.includes('exit');
  }, 5000);
  // The fake server may still be writing its last log line as it exits: retry on ENOTEMPTY.
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
});
