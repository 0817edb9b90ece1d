'use strict';
// The `draftls.status` answer -> status bar text, tooltip and a one-line summary. Pure: no
// `vscode` import, so that plain `node --test` can check it.

const ICONS = {
  starting: '$(sync~spin)',
  idle: '$(sync~spin)',
  loading: '$(sync~spin)',
  ready: '$(check)',
  failed: '$(error)',
  stopped: '$(circle-slash)',
};

/** The state to show: the server's own, or a client-side one (starting, stopped, failed). */
function stateOf(status) {
  const state = status && typeof status.state === 'string' ? status.state : 'starting';
  return state;
}

/** Status bar text, e.g. "$(check) draftls: ready (smollm2-135m)". */
function statusText(status) {
  const state = stateOf(status);
  const icon = ICONS[state] || '$(question)';
  const model = status && typeof status.model === 'string' && status.model ? ` (${status.model})` : '';
  return `${icon} draftls: ${state}${model}`;
}

function fmtMs(value) {
  return typeof value === 'number' && Number.isFinite(value) ? `${Math.round(value)} ms` : 'n/a';
}

/** A one-line summary for notifications, e.g. "draftls ready: smollm2-135m on torch/cpu, ...". */
function statusSummary(status) {
  const state = stateOf(status);
  if (!status || typeof status !== 'object') return `draftls: ${state}`;
  const parts = [];
  if (status.model) {
    // The weights where they are not float32 ("onnx int8"): `quantize: auto` picks them per CPU.
    const weights = typeof status.quantize === 'string' && status.quantize !== 'none' ? status.quantize : null;
    const backend = [status.backend, weights].filter((x) => typeof x === 'string' && x).join(' ');
    const where = [backend, status.device].filter((x) => typeof x === 'string' && x).join('/');
    parts.push(where ? `${status.model} on ${where}` : `${status.model}`);
  }
  if (typeof status.requests === 'number') {
    let counts = `${status.requests} requests, ${status.shown ?? 0} shown, ${status.accepted ?? 0} accepted`;
    if (typeof status.acceptance === 'number' && Number.isFinite(status.acceptance)) {
      counts += ` (${Math.round(status.acceptance * 100)}%)`;
    }
    parts.push(counts);
  }
  const latency = status.latency_ms;
  if (latency && typeof latency === 'object' && (latency.p50 != null || latency.p90 != null)) {
    parts.push(`latency p50 ${fmtMs(latency.p50)}, p90 ${fmtMs(latency.p90)}`);
  }
  if (status.error) parts.push(`error: ${status.error}`);
  return parts.length ? `draftls ${state}: ${parts.join('; ')}` : `draftls: ${state}`;
}

/** Tooltip: the summary split over lines, and what a click does. */
function statusTooltip(status) {
  const summary = statusSummary(status).replace(/^draftls[^:]*: /, '');
  const lines = [`draftls: ${stateOf(status)}`];
  if (summary !== stateOf(status)) lines.push(...summary.split('; '));
  lines.push('Click for details');
  return lines.join('\n');
}

module.exports = { stateOf, statusText, statusSummary, statusTooltip };
