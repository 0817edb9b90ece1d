'use strict';
// settings.js on hand-made inputs: the VS Code configuration -> server settings mapping,
// and the server command line. Plain node, no `vscode`, no node_modules.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const {
  SCHEMA,
  CLIENT_KEYS,
  toServerSettings,
  toServerSettingsReport,
  serverCommand,
  expandPath,
} = require('../settings');

// What a user gets with nothing set: the manifest defaults (tests/editors/test_vscode.py
// checks they equal the server's dataclass defaults).
const DEFAULTS = {
  model: 'smollm2-135m',
  backend: 'auto',
  quantize: 'auto',
  device: 'auto',
  drafts: 3,
  decoder: 'greedy',
  batchDrafts: true,
  maxNewTokens: 48,
  mode: 'auto',
  contextTokens: 1536,
  timeBudgetMs: 3000,
  monitors: true,
  nameAffinity: 6,
  earlyExit: false,
  speculative: false,
  stopOnUncertain: false,
  uncertainThreshold: 0.2,
  temperature: 0.7,
  topP: 0.95,
  seed: 0,
  kvReuse: true,
  tokenHealing: true,
};

/** A WorkspaceConfiguration-like object: only get(). */
function workspaceConfig(values) {
  return { get: (key) => values[key] };
}

test('the schema covers exactly the server settings, not the client keys', () => {
  assert.deepEqual(Object.keys(SCHEMA).sort(), Object.keys(DEFAULTS).sort());
  for (const key of CLIENT_KEYS) assert.ok(!(key in SCHEMA), key);
  for (const [name, spec] of Object.entries(SCHEMA)) assert.deepEqual(spec.default, DEFAULTS[name], name);
});

test('valid values pass through unchanged, from a plain object', () => {
  const input = {
    ...DEFAULTS,
    model: '/models/my-coder.gguf',
    backend: 'onnx',
    quantize: 'int4',
    device: 'cuda',
    drafts: 16,
    decoder: 'superposed',
    batchDrafts: false,
    maxNewTokens: 1,
    mode: 'line',
    contextTokens: 32768,
    timeBudgetMs: 10,
    monitors: false,
    nameAffinity: 20,
    earlyExit: true,
    speculative: true,
    stopOnUncertain: true,
    uncertainThreshold: 1,
    temperature: 0,
    topP: 1,
    seed: 2147483647,
    kvReuse: false,
    tokenHealing: false,
  };
  assert.deepEqual(toServerSettings(input), input);
  assert.deepEqual(toServerSettingsReport(input).invalid, []);
});

test('a WorkspaceConfiguration (get) with the defaults maps to the defaults', () => {
  const config = workspaceConfig({ ...DEFAULTS, 'server.path': '/x/draftls', 'server.args': ['serve'], 'trace.server': 'off' });
  assert.deepEqual(toServerSettings(config), DEFAULTS);
});

test('integers and floats: whole numbers count as integers, any finite number as a float', () => {
  const out = toServerSettings({ drafts: 4.0, temperature: 1, topP: 0.5, seed: 12 });
  assert.deepEqual(out, { drafts: 4, temperature: 1, topP: 0.5, seed: 12 });
});

test('invalid types and out-of-range values are dropped and reported', () => {
  const bad = {
    model: '   ',
    backend: 'tensorflow',
    quantize: 'int3',
    device: 'gpu',
    drafts: '3',
    decoder: 'beam',
    batchDrafts: 'yes',
    maxNewTokens: 2.5,
    mode: 'LINE',
    contextTokens: 8,
    timeBudgetMs: 600001,
    monitors: 'yes',
    nameAffinity: -1,
    earlyExit: 1,
    speculative: 'false',
    stopOnUncertain: 0,
    uncertainThreshold: 1.5,
    temperature: 'hot',
    topP: 0,
    seed: -1,
    kvReuse: null, // unset, not invalid
    tokenHealing: undefined, // unset, not invalid
  };
  const { settings, invalid } = toServerSettingsReport(bad);
  assert.deepEqual(settings, {});
  assert.deepEqual(invalid.sort(), Object.keys(bad).filter((k) => k !== 'kvReuse' && k !== 'tokenHealing').sort());
});

test('more invalid values, one at a time', () => {
  const cases = [
    ['drafts', 0],
    ['drafts', 17],
    ['drafts', true],
    ['drafts', [3]],
    ['maxNewTokens', 1025],
    ['temperature', 5.01],
    ['temperature', Number.NaN],
    ['temperature', Number.POSITIVE_INFINITY],
    ['topP', 1.5],
    ['seed', 2 ** 31],
    ['seed', 0.5],
    ['model', ''],
    ['model', 5],
    ['model', { name: 'x' }],
    ['monitors', null],
  ];
  for (const [name, value] of cases) {
    const out = toServerSettings({ ...DEFAULTS, [name]: value });
    assert.ok(!(name in out), `${name}=${String(value)} should be dropped`);
    assert.equal(Object.keys(out).length, Object.keys(DEFAULTS).length - 1, `${name}: only that key is dropped`);
  }
});

test('unknown keys, snake_case names, client keys and nested objects never reach the server', () => {
  const input = {
    drafts: 2,
    max_new_tokens: 10,
    maxnewtokens: 10,
    'draftls.model': 'x',
    server: { path: '/x/draftls', args: ['serve'] },
    trace: { server: 'verbose' },
    'server.path': '/x/draftls',
    foo: 'bar',
  };
  assert.deepEqual(toServerSettings(input), { drafts: 2 });
  // Inherited properties are not settings.
  assert.deepEqual(toServerSettings(Object.create({ drafts: 9 })), {});
});

test('empty inputs give an empty object', () => {
  assert.deepEqual(toServerSettings(undefined), {});
  assert.deepEqual(toServerSettings(null), {});
  assert.deepEqual(toServerSettings({}), {});
  assert.deepEqual(toServerSettings(workspaceConfig({})), {});
});

test('the result is a fresh object: changing it does not change the input', () => {
  const input = { drafts: 2 };
  const out = toServerSettings(input);
  out.drafts = 9;
  assert.equal(input.drafts, 2);
});

test('server command: defaults, custom path and args', () => {
  assert.deepEqual(serverCommand(workspaceConfig({})), { command: 'draftls', args: ['serve'] });
  assert.deepEqual(serverCommand(undefined), { command: 'draftls', args: ['serve'] });
  assert.deepEqual(
    serverCommand(workspaceConfig({ 'server.path': '/opt/venv/bin/draftls', 'server.args': ['serve', '--tcp', '2087'] })),
    { command: '/opt/venv/bin/draftls', args: ['serve', '--tcp', '2087'] },
  );
  // The nested form VS Code returns for getConfiguration().get('draftls').
  assert.deepEqual(serverCommand({ server: { path: '/opt/draftls', args: [] } }), { command: '/opt/draftls', args: [] });
});

test('server command: invalid path or args fall back to the defaults', () => {
  assert.deepEqual(serverCommand(workspaceConfig({ 'server.path': '  ', 'server.args': 'serve' })), { command: 'draftls', args: ['serve'] });
  assert.deepEqual(serverCommand(workspaceConfig({ 'server.path': 42, 'server.args': ['serve', 1] })), { command: 'draftls', args: ['serve'] });
});

test('server command: ~, ${workspaceFolder} and relative paths', () => {
  const env = { workspaceFolder: '/home/me/proj', home: '/home/me' };
  const cmd = (p, args) => serverCommand(workspaceConfig({ 'server.path': p, 'server.args': args }), env);
  assert.equal(cmd('~/venv/bin/draftls').command, '/home/me/venv/bin/draftls');
  assert.equal(cmd('${workspaceFolder}/.venv/bin/draftls').command, '/home/me/proj/.venv/bin/draftls');
  assert.equal(cmd('.venv/bin/draftls').command, path.join('/home/me/proj', '.venv/bin/draftls'));
  assert.equal(cmd('draftls').command, 'draftls'); // a bare name is looked up on PATH
  assert.deepEqual(cmd('draftls', ['serve', '--log', '${workspaceFolder}/log']).args, ['serve', '--log', '/home/me/proj/log']);
  // Without a workspace folder, relative paths and ${workspaceFolder} are left alone.
  assert.equal(expandPath('.venv/bin/draftls', {}), '.venv/bin/draftls');
  assert.equal(expandPath('~user/x', { home: '/home/me' }), '~user/x');
});
