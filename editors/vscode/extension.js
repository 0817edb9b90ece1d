'use strict';
// The draftls VS Code extension: starts `draftls serve` over stdio through
// vscode-languageclient (which provides textDocument/inlineCompletion from LSP 3.18, and
// runs the `draftls.accepted` command the server attaches to each draft when one is
// accepted), keeps the server's settings in sync, and shows the server's state in the
// status bar.

const os = require('os');
const vscode = require('vscode');
const { LanguageClient, State, ExecuteCommandRequest, DidChangeConfigurationNotification } = require('vscode-languageclient/node');
const { SECTION, toServerSettingsReport, serverCommand } = require('./settings');
const { stateOf, statusText, statusSummary, statusTooltip } = require('./status');

// Poll fast while the model loads, slowly once it is ready (requests refresh it as well).
const POLL_LOADING_MS = 1000;
const POLL_READY_MS = 15000;
const REFRESH_AFTER_REQUEST_MS = 300;

/** @type {LanguageClient | undefined} */
let client;
/** @type {vscode.StatusBarItem} */
let statusItem;
/** @type {vscode.LogOutputChannel} */
let output;
let pollTimer;
let refreshTimer;
let lastStatus;
let warnedInvalid = '';

function workspaceFolderPath() {
  const folders = vscode.workspace.workspaceFolders;
  return folders && folders.length ? folders[0].uri.fsPath : undefined;
}

/** The server settings from the current configuration; warns once per distinct set of invalid keys. */
function currentSettings() {
  const { settings, invalid } = toServerSettingsReport(vscode.workspace.getConfiguration(SECTION));
  const key = invalid.join(',');
  if (invalid.length && key !== warnedInvalid) {
    const names = invalid.map((n) => `${SECTION}.${n}`).join(', ');
    output.warn(`invalid settings not sent (the server uses its defaults): ${names}`);
    vscode.window.showWarningMessage(`draftls: invalid settings ignored: ${names}`);
  }
  warnedInvalid = key;
  return settings;
}

function showState(status) {
  lastStatus = status;
  statusItem.text = statusText(status);
  statusItem.tooltip = statusTooltip(status);
  const state = stateOf(status);
  statusItem.backgroundColor =
    state === 'failed' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
}

/** Ask the server for `draftls.status`; undefined when there is no running client. */
async function fetchStatus() {
  if (!client || client.state !== State.Running) return undefined;
  return client.sendRequest(ExecuteCommandRequest.type, { command: 'draftls.status', arguments: [] });
}

async function refreshStatus() {
  clearTimeout(pollTimer);
  if (!client) return; // stopped, or restarting: startClient polls again
  let state = 'starting';
  try {
    const status = await fetchStatus();
    if (status && typeof status === 'object') {
      showState(status);
      state = stateOf(status);
    } else if (client && client.state === State.Stopped) {
      showState({ state: 'stopped' });
      state = 'stopped';
    }
  } catch (err) {
    output.warn(`draftls.status failed: ${err && err.message ? err.message : err}`);
  }
  if (state === 'stopped') return;
  clearTimeout(pollTimer); // another refresh may have set one while this one waited
  pollTimer = setTimeout(refreshStatus, state === 'ready' || state === 'failed' ? POLL_READY_MS : POLL_LOADING_MS);
}

/** Refresh soon after a request or an acceptance, coalescing bursts of typing. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshStatus, REFRESH_AFTER_REQUEST_MS);
}

function createClient() {
  const config = vscode.workspace.getConfiguration(SECTION);
  const { command, args } = serverCommand(config, { workspaceFolder: workspaceFolderPath(), home: os.homedir() });
  output.info(`starting ${[command, ...args].join(' ')}`);
  const serverOptions = { command, args, options: { cwd: workspaceFolderPath() } };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'python' },
      { scheme: 'untitled', language: 'python' },
    ],
    initializationOptions: () => currentSettings(),
    // Registers for didChangeConfiguration; the middleware below replaces the raw section
    // with the mapped settings, so the server only ever sees known names and valid values.
    synchronize: { configurationSection: SECTION },
    outputChannel: output,
    traceOutputChannel: output,
    middleware: {
      workspace: {
        didChangeConfiguration: async () => {
          if (!client) return;
          await client.sendNotification(DidChangeConfigurationNotification.type, {
            settings: { [SECTION]: currentSettings() },
          });
        },
        configuration: async (params, token, next) => {
          const result = await next(params, token);
          if (!Array.isArray(result)) return result;
          return params.items.map((item, i) =>
            item.section === SECTION ? toServerSettingsReport(result[i]).settings : result[i],
          );
        },
      },
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        try {
          return await next(document, position, context, token);
        } finally {
          scheduleRefresh();
        }
      },
      executeCommand: async (cmd, args, next) => {
        try {
          return await next(cmd, args);
        } finally {
          if (cmd === 'draftls.accepted') scheduleRefresh();
        }
      },
    },
  };
  return new LanguageClient('draftls', 'draftls', serverOptions, clientOptions);
}

async function startClient() {
  client = createClient();
  showState({ state: 'starting' });
  client.onDidChangeState((event) => {
    if (event.newState === State.Stopped) showState({ ...(lastStatus || {}), state: 'stopped' });
    // The client restarts a crashed server by itself: resume polling when it is back.
    if (event.newState === State.Running && event.oldState !== State.Running) scheduleRefresh();
  });
  try {
    await client.start();
  } catch (err) {
    const message = err && err.message ? err.message : String(err);
    showState({ state: 'failed', error: message });
    output.error(`could not start the server: ${message}`);
    // Not awaited: activation must not wait for the user to answer.
    vscode.window
      .showErrorMessage(
        `draftls: could not start the server (${message}). Set draftls.server.path to the draftls executable in your virtual environment.`,
        'Open Settings',
      )
      .then((choice) => {
        if (choice === 'Open Settings') vscode.commands.executeCommand('workbench.action.openSettings', 'draftls.server');
      });
    return;
  }
  refreshStatus();
}

async function stopClient() {
  clearTimeout(pollTimer);
  clearTimeout(refreshTimer);
  const old = client;
  client = undefined;
  if (!old) return;
  try {
    // dispose = stop (shutdown, exit) and never start again; it throws for a client whose
    // start failed, which has nothing left to stop.
    await old.dispose(2000);
  } catch (err) {
    output.warn(`stopping the server: ${err && err.message ? err.message : err}`);
  }
}

let restarting = Promise.resolve();

/** Stop and start the server; restarts asked for while one runs wait for it. */
function restart() {
  const run = async () => {
    await stopClient();
    lastStatus = undefined;
    await startClient();
  };
  restarting = restarting.then(run, run);
  return restarting;
}

async function showStatus() {
  let status;
  try {
    status = await fetchStatus();
  } catch (err) {
    status = { state: 'failed', error: `draftls.status failed: ${err && err.message ? err.message : err}` };
  }
  status = status || lastStatus || { state: client ? 'starting' : 'stopped' };
  showState(status);
  output.info(`status: ${JSON.stringify(status, null, 2)}`);
  const show = stateOf(status) === 'failed' ? vscode.window.showErrorMessage : vscode.window.showInformationMessage;
  const choice = await show(statusSummary(status), 'Show Log', 'Restart');
  if (choice === 'Show Log') output.show(true);
  if (choice === 'Restart') await restart();
}

async function activate(context) {
  output = vscode.window.createOutputChannel('draftls', { log: true });
  statusItem = vscode.window.createStatusBarItem('draftls.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'draftls';
  statusItem.command = 'draftls.showStatus';
  statusItem.show();
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand('draftls.showStatus', showStatus),
    vscode.commands.registerCommand('draftls.restart', restart),
    vscode.workspace.onDidChangeConfiguration((event) => {
      // The command line is fixed when the process starts; other settings go over LSP.
      if (event.affectsConfiguration(`${SECTION}.server`)) restart();
    }),
    { dispose: () => { clearTimeout(pollTimer); clearTimeout(refreshTimer); } },
  );
  await startClient();
}

async function deactivate() {
  await stopClient();
}

module.exports = { activate, deactivate };
