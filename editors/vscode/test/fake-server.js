'use strict';
// A stand-in for `draftls serve`: just enough LSP over stdio to exercise the extension.
// Usage: node fake-server.js LOGFILE. Every message it receives is appended to LOGFILE as
// one JSON line. It answers initialize with draftls's capabilities, inlineCompletion with
// two drafts carrying the `draftls.accepted` command, `draftls.status` with "loading"
// first and "ready" after, and it pulls workspace/configuration once initialized.

const fs = require('fs');

const logFile = process.argv[2];
let nextId = 1000;
let statusCalls = 0;
let requests = 0;
let accepted = 0;

function log(message) {
  fs.appendFileSync(logFile, JSON.stringify(message) + '\n');
}

function send(message) {
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...message }), 'utf8');
  process.stdout.write(`Content-Length: ${body.length}\r\n\r\n`);
  process.stdout.write(body);
}

function status() {
  statusCalls += 1;
  return {
    state: statusCalls === 1 ? 'loading' : 'ready',
    error: null,
    model: 'smollm2-135m',
    backend: 'torch',
    device: 'cpu',
    requests,
    shown: requests * 2,
    accepted,
    acceptance: requests ? accepted / (requests * 2) : null,
    latency_ms: { p50: requests ? 12.5 : null, p90: requests ? 30 : null },
    last: {},
  };
}

function handle(message) {
  log(message);
  const { id, method, params } = message;
  if (method === undefined) return; // a response to our own request: logged, nothing else
  switch (method) {
    case 'initialize':
      return send({
        id,
        result: {
          capabilities: {
            textDocumentSync: { openClose: true, change: 2 },
            inlineCompletionProvider: true,
            completionProvider: { triggerCharacters: ['.'] },
            executeCommandProvider: { commands: ['draftls.accepted', 'draftls.status'] },
          },
          serverInfo: { name: 'fake-draftls', version: '0' },
        },
      });
    case 'initialized':
      return send({ id: nextId++, method: 'workspace/configuration', params: { items: [{ section: 'draftls' }] } });
    case 'textDocument/inlineCompletion': {
      requests += 1;
      const { line, character } = params.position;
      const range = { start: { line, character }, end: { line, character } };
      const command = (i) => ({ title: 'accepted', command: 'draftls.accepted', arguments: [{ request: requests, draft: i }] });
      return send({
        id,
        result: {
          items: [
            { insertText: 'append(x)', range, command: command(0) },
            { insertText: 'extend(xs)', range, command: command(1) },
          ],
        },
      });
    }
    case 'workspace/executeCommand':
      if (params.command === 'draftls.status') return send({ id, result: status() });
      if (params.command === 'draftls.accepted') {
        accepted += 1;
        return send({ id, result: null });
      }
      return send({ id, error: { code: -32601, message: `unknown command ${params.command}` } });
    case 'shutdown':
      return send({ id, result: null });
    case 'exit':
      return process.exit(0);
    default:
      if (id !== undefined) send({ id, error: { code: -32601, message: `unhandled ${method}` } });
  }
}

let buffer = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const headerEnd = buffer.indexOf('\r\n\r\n');
    if (headerEnd < 0) return;
    const header = buffer.subarray(0, headerEnd).toString('ascii');
    const match = /Content-Length: (\d+)/i.exec(header);
    const length = Number(match[1]);
    if (buffer.length < headerEnd + 4 + length) return;
    const body = buffer.subarray(headerEnd + 4, headerEnd + 4 + length).toString('utf8');
    buffer = buffer.subarray(headerEnd + 4 + length);
    handle(JSON.parse(body));
  }
});
process.stdin.on('end', () => process.exit(0));
