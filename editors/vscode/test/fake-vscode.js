'use strict';
// A minimal in-process stand-in for the `vscode` module, enough for extension.js and
// vscode-languageclient to start a real server process and talk to it. The parts the
// tests look at (configuration, status bar, commands, messages, providers) are real;
// everything else is a permissive no-op.

const path = require('path');
const Module = require('module');

/** A value that accepts any property access, call or construction, and is never a thenable. */
function permissive(name) {
  const target = function () {};
  return new Proxy(target, {
    get(_t, key) {
      if (key === 'then') return undefined;
      if (key === Symbol.iterator) return function* () {};
      if (key === Symbol.toPrimitive || key === 'toString') return () => name;
      if (key === 'dispose') return () => {};
      return permissive(`${name}.${String(key)}`);
    },
    apply() {
      return permissive(`${name}()`);
    },
    construct() {
      return permissive(`new ${name}`);
    },
  });
}

class Disposable {
  constructor(fn) {
    this._fn = fn;
  }
  static from(...items) {
    return new Disposable(() => items.forEach((d) => d && d.dispose && d.dispose()));
  }
  dispose() {
    if (this._fn) this._fn();
    this._fn = undefined;
  }
}

class EventEmitter {
  constructor() {
    this._listeners = new Set();
    this.event = (listener, thisArg) => {
      const bound = thisArg ? listener.bind(thisArg) : listener;
      this._listeners.add(bound);
      return new Disposable(() => this._listeners.delete(bound));
    };
  }
  fire(value) {
    for (const l of [...this._listeners]) l(value);
  }
  dispose() {
    this._listeners.clear();
  }
}

class Position {
  constructor(line, character) {
    this.line = line;
    this.character = character;
  }
}

class Range {
  constructor(a, b, c, d) {
    if (typeof a === 'number') {
      this.start = new Position(a, b);
      this.end = new Position(c, d);
    } else {
      this.start = a;
      this.end = b;
    }
  }
}

class Uri {
  constructor(scheme, fsPath) {
    this.scheme = scheme;
    this.fsPath = fsPath;
    this.path = fsPath;
  }
  static file(p) {
    return new Uri('file', p);
  }
  static parse(s) {
    const m = /^file:\/\/(.*)$/.exec(s);
    return m ? new Uri('file', decodeURIComponent(m[1])) : new Uri(s.split(':')[0], s);
  }
  toString() {
    return this.scheme === 'file' ? `file://${this.fsPath}` : this.fsPath;
  }
  toJSON() {
    return this.toString();
  }
}

class InlineCompletionItem {
  constructor(insertText, range, command) {
    this.insertText = insertText;
    this.range = range;
    this.command = command;
  }
}

class InlineCompletionList {
  constructor(items) {
    this.items = items;
  }
}

class CancellationTokenSource {
  constructor() {
    this.token = { isCancellationRequested: false, onCancellationRequested: new EventEmitter().event };
  }
  cancel() {
    this.token.isCancellationRequested = true;
  }
  dispose() {}
}

class ThemeColor {
  constructor(id) {
    this.id = id;
  }
}

/** Build a fresh fake: `settings` holds draftls.* values by their key under the section. */
function createFakeVscode({ defaults = {}, workspaceFolder } = {}) {
  const settings = { ...defaults };
  const commands = new Map();
  const messages = [];
  const outputLines = [];
  const statusItems = [];
  const inlineProviders = [];
  const configEmitter = new EventEmitter();
  const openEmitter = new EventEmitter();
  const textDocuments = [];

  function nested() {
    const out = {};
    for (const [key, value] of Object.entries(settings)) {
      const parts = key.split('.');
      let cur = out;
      for (const p of parts.slice(0, -1)) cur = cur[p] = cur[p] || {};
      cur[parts[parts.length - 1]] = value;
    }
    return out;
  }

  function getConfiguration(section) {
    return {
      get(key, fallback) {
        const full = section ? `${section}.${key}` : key;
        if (full === 'draftls') return nested();
        if (full.startsWith('draftls.')) {
          const name = full.slice('draftls.'.length);
          if (name in settings) return settings[name];
          const prefix = `${name}.`;
          const sub = Object.keys(settings).filter((k) => k.startsWith(prefix));
          if (sub.length) return Object.fromEntries(sub.map((k) => [k.slice(prefix.length), settings[k]]));
        }
        return fallback;
      },
      has(key) {
        return this.get(key) !== undefined;
      },
      inspect() {
        return undefined;
      },
      update() {
        return Promise.resolve();
      },
    };
  }

  function logChannel(name) {
    const write = (level) => (msg) => outputLines.push(`[${level}] ${msg}`);
    return {
      name,
      logLevel: 2,
      onDidChangeLogLevel: new EventEmitter().event,
      trace: write('trace'),
      debug: write('debug'),
      info: write('info'),
      warn: write('warn'),
      error: write('error'),
      append: write('append'),
      appendLine: write('line'),
      replace() {},
      clear() {},
      show() {},
      hide() {},
      dispose() {},
    };
  }

  function message(kind) {
    return (text, ...items) => {
      messages.push({ kind, text, items: items.filter((i) => typeof i === 'string') });
      return Promise.resolve(undefined);
    };
  }

  const folder = workspaceFolder ? { uri: Uri.file(workspaceFolder), name: path.basename(workspaceFolder), index: 0 } : undefined;

  const real = {
    version: '1.95.0',
    Disposable,
    EventEmitter,
    Position,
    Range,
    Uri,
    InlineCompletionItem,
    InlineCompletionList,
    CancellationTokenSource,
    CancellationError: class CancellationError extends Error {},
    ThemeColor,
    StatusBarAlignment: { Left: 1, Right: 2 },
    InlineCompletionTriggerKind: { Invoke: 0, Automatic: 1 },
    LogLevel: { Off: 0, Trace: 1, Debug: 2, Info: 3, Warning: 4, Error: 5 },
    ProgressLocation: { SourceControl: 1, Window: 10, Notification: 15 },
    env: { appName: 'fake-vscode', language: 'en', machineId: 'fake', sessionId: 'fake', openExternal: async () => true },
    commands: {
      registerCommand(id, fn) {
        if (commands.has(id)) throw new Error(`command '${id}' already exists`);
        commands.set(id, fn);
        return new Disposable(() => commands.delete(id));
      },
      executeCommand(id, ...args) {
        const fn = commands.get(id);
        return fn ? Promise.resolve(fn(...args)) : Promise.reject(new Error(`command '${id}' not found`));
      },
    },
    window: {
      createOutputChannel: (name) => logChannel(name),
      createStatusBarItem(id, alignment, priority) {
        const item = { id, alignment, priority, text: '', tooltip: '', visible: false, show() { this.visible = true; }, hide() { this.visible = false; }, dispose() {} };
        statusItems.push(item);
        return item;
      },
      showInformationMessage: message('info'),
      showWarningMessage: message('warning'),
      showErrorMessage: message('error'),
      withProgress: (_opts, task) => task({ report() {} }, new CancellationTokenSource().token),
      activeTextEditor: undefined,
      visibleTextEditors: [],
      onDidChangeVisibleTextEditors: new EventEmitter().event,
      onDidChangeActiveTextEditor: new EventEmitter().event,
      tabGroups: { all: [], onDidChangeTabs: new EventEmitter().event, onDidChangeTabGroups: new EventEmitter().event },
    },
    workspace: {
      workspaceFolders: folder ? [folder] : undefined,
      textDocuments,
      notebookDocuments: [],
      getConfiguration,
      onDidChangeConfiguration: configEmitter.event,
      onDidOpenTextDocument: openEmitter.event,
      onDidChangeTextDocument: new EventEmitter().event,
      onDidCloseTextDocument: new EventEmitter().event,
      onDidSaveTextDocument: new EventEmitter().event,
      onWillSaveTextDocument: new EventEmitter().event,
      onDidChangeWorkspaceFolders: new EventEmitter().event,
      onDidOpenNotebookDocument: new EventEmitter().event,
      onDidCloseNotebookDocument: new EventEmitter().event,
      onDidChangeNotebookDocument: new EventEmitter().event,
      onDidSaveNotebookDocument: new EventEmitter().event,
      getWorkspaceFolder: () => folder,
    },
    languages: {
      match: (selector, doc) => ([].concat(selector).some((s) => (typeof s === 'string' ? s : s.language) === doc.languageId) ? 10 : 0),
      registerInlineCompletionItemProvider(selector, provider) {
        inlineProviders.push({ selector, provider });
        return new Disposable(() => inlineProviders.splice(inlineProviders.findIndex((p) => p.provider === provider), 1));
      },
      registerCompletionItemProvider: () => new Disposable(),
      createDiagnosticCollection: (name) => permissive(`diagnostics ${name}`),
    },
  };

  const vscode = new Proxy(real, {
    get(target, key) {
      if (key in target) return target[key];
      // __esModule makes TypeScript's importStar hand this proxy over as it is.
      if (key === '__esModule') return true;
      if (key === 'then' || typeof key === 'symbol') return undefined;
      return permissive(`vscode.${key}`);
    },
  });

  /** Change settings and fire onDidChangeConfiguration the way VS Code does. */
  function changeSettings(changes) {
    Object.assign(settings, changes);
    const keys = Object.keys(changes).map((k) => `draftls.${k}`);
    configEmitter.fire({ affectsConfiguration: (s) => keys.some((k) => k === s || k.startsWith(`${s}.`)) });
  }

  /** Open a Python document the way VS Code does: it joins textDocuments and fires the event. */
  function openDocument(fsPath, text) {
    const document = {
      uri: Uri.file(fsPath),
      fileName: fsPath,
      languageId: 'python',
      version: 1,
      isClosed: false,
      getText: () => text,
    };
    textDocuments.push(document);
    openEmitter.fire(document);
    return document;
  }

  return { vscode, settings, commands, messages, outputLines, statusItems, inlineProviders, changeSettings, openDocument };
}

/** Make `require('vscode')` return `fake.vscode` from now on. */
function installFakeVscode(fake) {
  const original = Module._load;
  Module._load = function (request, ...rest) {
    if (request === 'vscode') return fake.vscode;
    return original.call(this, request, ...rest);
  };
  return () => {
    Module._load = original;
  };
}

module.exports = { createFakeVscode, installFakeVscode };
