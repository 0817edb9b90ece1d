'use strict';
// VS Code configuration -> the server's settings object. Pure: no `vscode` import, so that
// plain `node --test` can check it. The schema is read from this extension's own manifest
// (contributes.configuration), which tests/editors/test_vscode.py compares with the
// server's Settings dataclass, so the three cannot drift apart.

const path = require('path');
const manifest = require('./package.json');

const SECTION = 'draftls';
// Keys under draftls.* that configure the extension itself and never reach the server.
const CLIENT_KEYS = new Set(['server.path', 'server.args', 'trace.server']);
const DEFAULT_SERVER_PATH = 'draftls';
const DEFAULT_SERVER_ARGS = ['serve'];

/** The server settings schema: wire name -> {type, enum, minimum, maximum, default}. */
function loadSchema() {
  const schema = {};
  const props = manifest.contributes.configuration.properties;
  for (const [fullName, prop] of Object.entries(props)) {
    const name = fullName.slice(SECTION.length + 1);
    if (CLIENT_KEYS.has(name)) continue;
    schema[name] = {
      type: prop.type,
      enum: prop.enum,
      minimum: prop.minimum,
      maximum: prop.maximum,
      default: prop.default,
    };
  }
  return Object.freeze(schema);
}

const SCHEMA = loadSchema();

/** True when `value` is a valid value for the schema entry `spec`. */
function isValid(spec, value) {
  if (spec.enum !== undefined) return spec.enum.includes(value);
  switch (spec.type) {
    case 'boolean':
      return typeof value === 'boolean';
    case 'string':
      return typeof value === 'string' && value.trim() !== '';
    case 'integer':
      return Number.isInteger(value) && inRange(spec, value);
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) && inRange(spec, value);
    default:
      return false;
  }
}

function inRange(spec, value) {
  return (spec.minimum === undefined || value >= spec.minimum) && (spec.maximum === undefined || value <= spec.maximum);
}

/** Read one key from a WorkspaceConfiguration (has get) or a plain object. */
function read(config, name) {
  if (config === null || config === undefined) return undefined;
  if (typeof config.get === 'function') return config.get(name);
  return Object.prototype.hasOwnProperty.call(config, name) ? config[name] : undefined;
}

/**
 * The settings object sent to the server (initializationOptions, didChangeConfiguration,
 * workspace/configuration): only known wire names, only valid values. Unset and invalid
 * values are dropped so that the server keeps its own default; `invalid` lists the dropped
 * invalid ones so the extension can say so.
 */
function toServerSettingsReport(config) {
  const settings = {};
  const invalid = [];
  for (const [name, spec] of Object.entries(SCHEMA)) {
    const value = read(config, name);
    if (value === undefined || value === null) continue;
    if (isValid(spec, value)) {
      settings[name] = value;
    } else {
      invalid.push(name);
    }
  }
  return { settings, invalid };
}

/** Only the settings object of toServerSettingsReport. */
function toServerSettings(config) {
  return toServerSettingsReport(config).settings;
}

/** Expand `~` and ${workspaceFolder}, and anchor a relative path with a slash at the workspace folder. */
function expandPath(value, { workspaceFolder, home } = {}) {
  let out = value;
  if (workspaceFolder) out = out.split('${workspaceFolder}').join(workspaceFolder);
  if (home && (out === '~' || out.startsWith('~/'))) out = home + out.slice(1);
  const hasSlash = out.includes('/') || out.includes('\\');
  if (workspaceFolder && hasSlash && !path.isAbsolute(out)) out = path.join(workspaceFolder, out);
  return out;
}

/** The command that starts the server: {command, args}, falling back to `draftls serve`. */
function serverCommand(config, env = {}) {
  const rawPath = read(config, 'server.path') ?? read(read(config, 'server'), 'path');
  const rawArgs = read(config, 'server.args') ?? read(read(config, 'server'), 'args');
  const command = typeof rawPath === 'string' && rawPath.trim() !== '' ? expandPath(rawPath.trim(), env) : DEFAULT_SERVER_PATH;
  const argsOk = Array.isArray(rawArgs) && rawArgs.every((a) => typeof a === 'string');
  const args = argsOk ? rawArgs.map((a) => (env.workspaceFolder ? a.split('${workspaceFolder}').join(env.workspaceFolder) : a)) : [...DEFAULT_SERVER_ARGS];
  return { command, args };
}

module.exports = {
  SECTION,
  SCHEMA,
  CLIENT_KEYS,
  DEFAULT_SERVER_PATH,
  DEFAULT_SERVER_ARGS,
  isValid,
  toServerSettings,
  toServerSettingsReport,
  serverCommand,
  expandPath,
};
