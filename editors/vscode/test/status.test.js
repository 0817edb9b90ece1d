'use strict';
// status.js: what the status bar and the status command show for a `draftls.status` answer.

const test = require('node:test');
const assert = require('node:assert/strict');
const { stateOf, statusText, statusSummary, statusTooltip } = require('../status');

const READY = {
  state: 'ready',
  error: null,
  model: 'smollm2-135m',
  backend: 'torch',
  device: 'cpu',
  requests: 10,
  shown: 20,
  accepted: 5,
  acceptance: 0.25,
  latency_ms: { p50: 120.4, p90: 301.6 },
  last: { total_ms: 100 },
};

test('status bar text shows the state and the model', () => {
  assert.equal(statusText(READY), '$(check) draftls: ready (smollm2-135m)');
  assert.equal(statusText({ ...READY, state: 'loading' }), '$(sync~spin) draftls: loading (smollm2-135m)');
  assert.equal(statusText({ ...READY, state: 'failed' }), '$(error) draftls: failed (smollm2-135m)');
  assert.equal(statusText({ state: 'failed', error: 'spawn draftls ENOENT' }), '$(error) draftls: failed');
  assert.equal(statusText(undefined), '$(sync~spin) draftls: starting');
  assert.equal(statusText({ ...READY, state: 'idle' }), '$(sync~spin) draftls: idle (smollm2-135m)');
  assert.equal(statusText({ state: 'weird' }), '$(question) draftls: weird');
});

test('stateOf falls back to starting', () => {
  assert.equal(stateOf(null), 'starting');
  assert.equal(stateOf({ state: 3 }), 'starting');
  assert.equal(stateOf(READY), 'ready');
});

test('summary: model, backend, device, counts, acceptance and latency', () => {
  assert.equal(
    statusSummary(READY),
    'draftls ready: smollm2-135m on torch/cpu; 10 requests, 20 shown, 5 accepted (25%); latency p50 120 ms, p90 302 ms',
  );
});

test('summary: the weights after the backend where they are quantized', () => {
  const int8 = { ...READY, backend: 'onnx', quantize: 'int8' };
  assert.match(statusSummary(int8), /^draftls ready: smollm2-135m on onnx int8\/cpu; /);
  assert.match(statusSummary({ ...int8, quantize: 'none' }), /^draftls ready: smollm2-135m on onnx\/cpu; /);
});

test('summary: nulls before the first request, and the error when failed', () => {
  const fresh = { ...READY, state: 'loading', requests: 0, shown: 0, accepted: 0, acceptance: null, latency_ms: { p50: null, p90: null } };
  assert.equal(statusSummary(fresh), 'draftls loading: smollm2-135m on torch/cpu; 0 requests, 0 shown, 0 accepted');
  const failed = { ...fresh, state: 'failed', error: 'no such model: foo' };
  assert.match(statusSummary(failed), /^draftls failed: .*; error: no such model: foo$/);
  assert.equal(statusSummary({ state: 'stopped' }), 'draftls: stopped');
  assert.equal(statusSummary(undefined), 'draftls: starting');
});

test('tooltip: one fact per line, and what a click does', () => {
  assert.deepEqual(statusTooltip(READY).split('\n'), [
    'draftls: ready',
    'smollm2-135m on torch/cpu',
    '10 requests, 20 shown, 5 accepted (25%)',
    'latency p50 120 ms, p90 302 ms',
    'Click for details',
  ]);
  assert.deepEqual(statusTooltip({ state: 'starting' }).split('\n'), ['draftls: starting', 'Click for details']);
});
