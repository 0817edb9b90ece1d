"""Lossless self-speculative decoding: draft with the early layers, verify with the rest.

One round, from a token t at position P whose logits are wanted (Kangaroo / LayerSkip):

1. draft: run layers [0, E) on t, read the exit head at E (shortlist only); while its top
   token y is confident (p >= eta) and the monitors allow it, accept y into the monitors,
   run [0, E) on y, and go on, up to d tokens. The early layers' K/V of the drafted
   tokens are exactly what the full model computes for them.
2. verify: run layers [E, L) once on the stacked exit states [1, 1+k, D] (no early layer
   runs again), then the final norm and head: logits after t, y1, ..., yk.
3. the monitors roll back the k drafted tokens. The decoder then chooses each next token
   from the verified logits as plain greedy decoding would (monitor masks included):
   while it picks y1, y2, ... their logits are already there; at the first difference
   the cache is cut back and the next round starts from the chosen token. So the output
   is plain greedy's, token for token.

The exit layer E and the draft length d adapt online (DEL): every few rounds the
verified tokens are compared with the shortlisted prediction of every head layer, an
acceptance rate per layer is kept, and E, d are set to maximise the expected tokens per
unit of cost, (1 - a^(d+1)) / (1 - a) / (d * c_draft(E) + c_verify(E)). Until a probe
shows that some layer beats plain decoding (gain 1 per full step), rounds are full passes,
and a probe reads the head layers' states from one of them (`step_states`). So a backend
whose partial passes cost extra (ONNX Runtime's layer segments) runs them only once
drafting pays. The costs are weight shares corrected by the measured time of the
exit-head rounds: on the default model, heads that the shares say pay by 1.11x ran at
0.96x of plain decoding (BENCHMARKS.md).

Code repeats itself, so more drafters cost no model time: when the last three tokens
occurred before (in the prompt or the draft so far), what followed them then is
proposed (prompt lookup); else the same on the last two tokens or the last one; else
the standard-library n-gram table proposes its most frequent continuation. The full
model verifies such a draft in one pass over the 1+k tokens. How many of them to send is
chosen from the measured cost of a pass of each length and each source's measured
acceptance. The shape of those costs depends on the backend and the host: on torch a pass
over 2 tokens costs about what a 1-token step does and 3 or 4 tokens 1.4 to 1.5 steps; on
ONNX Runtime the second token costs a fifth to a quarter of a step and the third and fourth
little more. So a length not yet timed is assumed to cost what the next shorter timed one does:
the controller tries it, and keeps it only if it pays (BENCHMARKS.md). Free drafts are
tried first; the exit-head drafter is the fallback. All are lossless.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from decoding.ngram import NgramTable
from decoding.sampling import combined_bias
from models.config import default_exit_layers
from models.backend import Backend
from monitors.base import Monitor

log = logging.getLogger(__name__)


MIN_PROBED = 16  # positions a head layer must have been probed at before drafting there
MIN_TIMED = 3  # passes of a length timed before its own cost is believed (their median)


@dataclass
class SpecConfig:
    """Where drafting exits and how far it goes; shared across requests, adapted online."""

    layers: list[int]  # exit layers with heads, ascending
    layer: int  # current exit layer
    max_draft: int = 0  # current draft length d (0: no exit-head drafting, until the probes show it pays)
    eta: float = 0.5  # stop drafting below this draft confidence
    probe_every: int = 8  # rounds without a free draft between probes (4x as many while drafting does not pay)
    alpha: dict[int, float] = field(default_factory=dict)  # per-layer acceptance estimates
    probed: dict[int, list[float]] = field(default_factory=dict)  # per layer: [agreed, positions] (decayed)
    rounds: int = 0
    probes: int = 0  # probes from full passes so far (each reads the next head layer in turn)
    lookup: int = 8  # most tokens a context-lookup draft proposes (0: no lookup drafts)
    lookup_ngram: int = 3  # tokens that must match before the lookup position
    ngram: int = 4  # most tokens an n-gram draft proposes (0: none)
    ngram_floor: float = 0.5  # an n-gram draft goes past its first token only while each share is above this
    head_share: float = 0.2  # share of one full step spent in the LM head
    short_share: float = 0.03  # the shortlisted head's share
    pass_ms: dict[int, float] = field(default_factory=dict)  # measured ms of a full pass over T tokens
    timings: dict[int, list[float]] = field(default_factory=dict)  # the first MIN_TIMED timings per length
    hits: dict[str, list[float]] = field(default_factory=dict)  # per free source: [accepted, missed] (decayed)
    # Exit-head rounds: [measured, modelled] ms (decayed). The prior, worth about two rounds, is
    # what the default model's rounds measured on torch: 1.24x their modelled time (BENCHMARKS.md).
    round_ms: list[float] = field(default_factory=lambda: [124.0, 100.0])

    def pass_cost(self, t: int) -> float:
        """Measured ms of a full pass over t tokens. Until a length has been timed MIN_TIMED
        times, it is assumed to cost what the longest shorter timed length does: optimistic, so
        that the controller sends a draft that long and learns what it costs."""
        if self.timed(t):
            return self.pass_ms[t]
        shorter = [s for s in self.pass_ms if s < t and self.timed(s)]
        if shorter:
            return self.pass_ms[max(shorter)]
        return min(self.pass_ms.values(), default=1.0)  # nothing shorter timed yet: the cheapest seen

    def timed(self, t: int) -> bool:
        """Whether passes over t tokens have been timed often enough to believe their cost."""
        return len(self.timings.get(t, ())) >= MIN_TIMED

    def record_pass(self, t: int, ms: float) -> None:
        """The median of a length's first timings (one slow pass should not rule a length out
        for good), then a moving average."""
        first = self.timings.setdefault(t, [])
        if len(first) < MIN_TIMED:
            first.append(ms)
            self.pass_ms[t] = sorted(first)[len(first) // 2]
        else:
            self.pass_ms[t] = 0.9 * self.pass_ms[t] + 0.1 * ms

    def acceptance(self, source: str) -> float:
        """Chance that a free draft's next token is accepted, given the ones before it were."""
        acc, miss = self.hits.get(source, [1.0, 1.0])  # a weak prior of 1/2
        return acc / (acc + miss)

    def record_hits(self, source: str, accepted: int, missed: bool) -> None:
        h = self.hits.setdefault(source, [1.0, 1.0])
        h[0], h[1] = 0.98 * h[0] + accepted, 0.98 * h[1] + missed

    def free_length(self, source: str, available: int) -> int:
        """How many of `available` free draft tokens to verify: the most expected tokens per ms."""
        a = self.acceptance(source)
        best, best_k, expect = 1.0 / self.pass_cost(1), 0, 1.0
        for k in range(1, available + 1):
            expect += a**k
            gain = expect / self.pass_cost(1 + k)
            if gain > best:
                best, best_k = gain, k
        return best_k

    def cost(self, layer: int, d: int, n_layers: int) -> float:
        """Cost of a round in full steps: d drafted tokens and a (1+d)-token verify."""
        body = 1.0 - self.head_share
        return d * (body * layer / n_layers + self.short_share) + body * (n_layers - layer) / n_layers + self.head_share

    def overhead(self) -> float:
        """Measured over modelled time of the exit-head rounds: what the weight shares leave
        out, such as a partial pass's own calls, a 2-token verify's extra attention, and on
        ONNX Runtime its layer segments."""
        measured, modelled = self.round_ms
        return measured / modelled if modelled > 0 else 1.0

    def record_round(self, ms: float, drafted: int, n_layers: int) -> None:
        modelled = self.cost(self.layer, drafted, n_layers) * self.pass_cost(1)
        self.round_ms = [0.9 * self.round_ms[0] + ms, 0.9 * self.round_ms[1] + modelled]

    def adapt(self, n_layers: int) -> None:
        """Pick the layer and draft length with the best expected tokens per unit cost."""
        best = (1.0, self.layer, 0)  # plain decoding: one token per full step
        for layer in self.layers:
            # Only a layer whose acceptance is known from enough positions: a switch to drafting
            # on a lucky probe costs a round trip (and on ONNX Runtime, loading its segments).
            seen = self.probed.get(layer)
            if layer not in self.alpha or (seen is not None and seen[1] < MIN_PROBED):
                continue
            a = min(0.98, max(0.02, self.alpha[layer]))
            for d in range(1, 9):
                gain = (1 - a ** (d + 1)) / (1 - a) / (self.cost(layer, d, n_layers) * self.overhead())
                if gain > best[0]:
                    best = (gain, layer, d)
        _, self.layer, self.max_draft = best


class Speculator:
    """Gives the decoder the logits after each chosen token, drafting and verifying ahead."""

    def __init__(self, backend: Backend, cfg: SpecConfig, eos_ids: set[int], context: list[int] | None = None,
                 ngrams: NgramTable | None = None):
        self.backend = backend
        self.cfg = cfg
        self.eos = eos_ids
        self.n_layers = backend.config.num_layers
        self.queue: list[tuple[int, Tensor]] = []  # drafted tokens with the verified logits after them
        self.prefix = "spec"  # of its counters in a draft's stats
        self.ngrams = ngrams
        self.stats = {"rounds": 0, "drafted": 0, "accepted": 0, "lookup_rounds": 0, "lookup_drafted": 0,
                      "lookup_accepted": 0, "near_rounds": 0, "near_drafted": 0, "near_accepted": 0, "ngram_rounds": 0,
                      "ngram_drafted": 0, "ngram_accepted": 0}
        self._source = ""  # where the queued drafts came from: "lookup", "near", "ngram" or "" (exit heads)
        self._taken = 0  # of the queued free drafts, how many the decoder took
        self.history: list[int] = list(context or [])[-4096:]  # prompt and chosen tokens, for lookup
        self._seen: dict[tuple[int, ...], int] = {}  # 1- to n-gram -> where it last ended in `history`
        self._indexed = 0  # n-grams ending at or before this are in `_seen`
        self._index(len(self.history) - 1)  # the last n-gram is looked up, not found

    def next_logits(self, token: int, monitors: list[Monitor]) -> Tensor:
        """Logits [V] after `token`, which the decoder just chose and the monitors accepted."""
        self._remember(token)
        if self.queue:
            if self.queue[0][0] == token:
                self.stats["accepted"] += 1
                if self._source:
                    self.stats[f"{self._source}_accepted"] += 1
                    self._taken += 1
                    if len(self.queue) == 1:
                        self.cfg.record_hits(self._source, self._taken, False)
                return self.queue.pop(0)[1]
            self._drop_queue(missed=True)
        return self._round(token, monitors)

    def finish(self) -> None:
        """Forget drafts the decoder did not get to (it stopped)."""
        self._drop_queue(missed=False)

    def _drop_queue(self, missed: bool) -> None:
        if self.queue:
            self.backend.truncate(self.backend.length - len(self.queue))  # drop the unused drafts
            self.queue.clear()
            if self._source:
                self.cfg.record_hits(self._source, self._taken, missed)

    def _remember(self, token: int) -> None:
        self.history.append(token)

    def _index(self, upto: int) -> None:
        """Index the 1- to n-grams that end after `_indexed` and at or before `upto`."""
        for end in range(self._indexed + 1, upto + 1):
            for n in range(1, min(self.cfg.lookup_ngram, end) + 1):
                self._seen[tuple(self.history[end - n : end])] = end
        self._indexed = max(self._indexed, upto)

    def _lookup(self, n: int | None = None) -> list[int]:
        """What followed the last n tokens (default `lookup_ngram`) the previous time they
        occurred, at most `lookup` tokens."""
        n = n or self.cfg.lookup_ngram
        k, here = self.cfg.lookup, len(self.history)
        if k <= 0 or here <= n:
            return []
        self._index(here - 1)  # everything before now, so the n-gram does not find itself
        end = self._seen.get(tuple(self.history[-n:]))
        return self.history[end : end + k] if end is not None else []

    def _near_lookup(self) -> list[int]:
        """Lookup on a shorter match (the last 2 tokens, then the last one): right less often
        than a full match, still about half the time in code, and still free."""
        for n in range(self.cfg.lookup_ngram - 1, 0, -1):
            if found := self._lookup(n):
                return found
        return []

    def _ngram_draft(self) -> list[int]:
        """The n-gram table's continuation: its first guess, then more while they are common."""
        if self.ngrams is None or self.cfg.ngram <= 0:
            return []
        context, out = self.history[-3:], []
        while len(out) < self.cfg.ngram:
            guess = self.ngrams.predict(context)
            if guess is None or (out and guess[1] < self.cfg.ngram_floor):
                break
            out.append(guess[0])
            context = [*context[1:], guess[0]]
        return out

    def _full_pass(self, ids: list[int], probe: bool) -> Tensor:
        """A full pass over ids, timed for the cost model: logits [T, V]. A probe also reads a
        head layer's states from it, a different layer each time (probing all six heads of the
        default model cost a fifth to half of a step), and measures its head against the pass's
        logits."""
        t0 = time.perf_counter()
        x = torch.tensor([ids])
        states: dict[int, Tensor] | None = None
        if probe:
            layer = self.cfg.layers[self.cfg.probes % len(self.cfg.layers)]
            self.cfg.probes += 1
            out, states = self.backend.step_states(x, [layer])
        else:
            out = self.backend.step(x)
        self.cfg.record_pass(len(ids), (time.perf_counter() - t0) * 1000)
        if states is not None:
            self._probe(out[0], states)
        return out[0]

    @torch.inference_mode()
    def _round(self, token: int, monitors: list[Monitor]) -> Tensor:
        cfg, b = self.cfg, self.backend
        self.stats["rounds"] += 1
        for source, draft in (("lookup", self._lookup), ("near", self._near_lookup), ("ngram", self._ngram_draft)):
            guess = list(itertools.takewhile(lambda t: t not in self.eos, draft()))
            guess = guess[: cfg.free_length(source, len(guess))]
            if not guess:
                continue
            # Verify the free draft with the full model: one pass over [token, guess...].
            self.stats[f"{source}_rounds"] += 1
            full = self._full_pass([token, *guess], probe=False)  # [1+k, V]
            self.stats["drafted"] += len(guess)
            self.stats[f"{source}_drafted"] += len(guess)
            self._source, self._taken = source, 0
            self.queue = [(y, full[j + 1]) for j, y in enumerate(guess)]
            return full[0]
        # Only the rounds where the exit heads would draft probe them; a quarter as often while
        # they do not pay: every eighth such round cost speculation 5% on ONNX Runtime.
        probe = cfg.rounds % (cfg.probe_every * (1 if cfg.max_draft else 4)) == 0
        cfg.rounds += 1
        if cfg.max_draft == 0:
            return self._full_pass([token], probe)[-1]  # drafting does not pay here (or is not known to)
        t0 = time.perf_counter()
        exit_layer = cfg.layer
        cuts = sorted({l for l in cfg.layers if l < exit_layer} | {exit_layer}) if probe else [exit_layer]
        early: list[dict[int, Tensor]] = []  # per position: states at the probed layers below E
        exits: list[Tensor] = []
        drafted: list[int] = []
        x = token
        while True:
            h = b.embed(torch.tensor([[x]]))
            states: dict[int, Tensor] = {}
            done = 0
            for cut in cuts:
                h = b.run_layers(h, done, cut)
                done = cut
                states[cut] = h
            exits.append(h)
            early.append(states)
            if len(drafted) >= max(1, cfg.max_draft):
                break
            logits = b.draft_logits(h, exit_layer)[0, -1]
            mask = draft_mask(monitors)
            if (bias := combined_bias(monitors)) is not None:
                logits = logits + bias.to(logits.device)  # as the decoder will score it, so drafts agree
            if mask is not None:
                if not bool(mask.any()):
                    break
                logits = logits.masked_fill(~mask.to(logits.device), float("-inf"))
            probs = torch.softmax(logits, -1)
            y = int(torch.argmax(probs))
            if y in self.eos or float(probs[y]) < cfg.eta:
                break
            drafted.append(y)
            for m in list(monitors):
                try:
                    m.accept(y)
                except Exception:
                    _drop(m, monitors)
            x = y
        # Verify: the remaining layers on every exit state at once.
        stack = torch.cat(exits, dim=1)  # [1, 1+k, D]
        late_cuts = sorted(l for l in cfg.layers if l > exit_layer) if probe else []
        late: dict[int, Tensor] = {}
        h, done = stack, exit_layer
        for cut in late_cuts + [self.n_layers]:
            h = b.run_layers(h, done, cut)
            done = cut
            late[cut] = h
        full = b.exit_logits(h, self.n_layers)[0]  # [1+k, V]
        cfg.record_round((time.perf_counter() - t0) * 1000, len(drafted), self.n_layers)
        # A monitor still here accepted every drafted token (one that failed was dropped).
        for m in list(monitors):
            try:
                m.rollback(len(drafted))
            except Exception:
                _drop(m, monitors)
        self.stats["drafted"] += len(drafted)
        self.queue = [(y, full[j + 1]) for j, y in enumerate(drafted)]
        self._source = ""
        if probe:
            states = {l: torch.cat([e[l] for e in early], dim=1) for l in early[0]} | late
            self._probe(full, states | {exit_layer: stack})
        return full[0]

    def _probe(self, full: Tensor, states: dict[int, Tensor]) -> None:
        """Acceptance per head layer on a pass's positions (full [T, V], states [1, T, D] per
        layer): would the head draft the final top token? It drafts only above `eta`, so a
        right but unsure head gains nothing."""
        want = full.argmax(-1)  # [T]
        for layer in self.cfg.layers:
            h = states.get(layer)
            if h is None:
                continue
            p, got = torch.softmax(self.backend.draft_logits(h, layer)[0].float(), -1).max(-1)  # [T]
            counts = self.cfg.probed.setdefault(layer, [0.0, 0.0])
            counts[0] = 0.95 * counts[0] + float(((got == want) & (p >= self.cfg.eta)).sum())
            counts[1] = 0.95 * counts[1] + len(want)
            # A Beta(1, 3) prior: a probe of one or two positions must not make a layer look perfect.
            self.cfg.alpha[layer] = (counts[0] + 1) / (counts[1] + 4)
        drafting = self.cfg.max_draft > 0
        self.cfg.adapt(self.n_layers)
        if drafting and self.cfg.max_draft == 0:
            self.backend.prepare_full()  # full passes only from here: ONNX Runtime's one graph again


def _drop(m: Monitor, monitors: list[Monitor]) -> None:
    """A monitor that fails while drafting is dropped from the draft, as the decoder does."""
    log.exception("monitor %s failed while drafting; decoding goes on without it", type(m).__name__)
    monitors.remove(m)


def draft_mask(monitors: list[Monitor]) -> Tensor | None:
    """AND of the monitors' masks for a token decided ahead of the decoder (a draft, an early
    exit). Unlike the decoder's, it keeps monitors that are done: they may be needed again
    once drafts roll back."""
    mask = None
    for m in list(monitors):
        try:
            allowed = None if m.done else m.allowed()
        except Exception:
            _drop(m, monitors)
            continue
        if allowed is not None:
            mask = allowed if mask is None else mask & allowed
    return mask


def default_config(backend: Backend) -> SpecConfig | None:
    """A starting configuration: the backend's exit-head layers, or without heads the plain
    shared head at a quarter, a third and half of the depth (lossless either way); None for
    a one-layer model."""
    cfg = backend.config
    n = cfg.num_layers
    if n < 2:
        return None
    heads = getattr(backend, "exit_heads", {})
    layers = sorted(l for l in heads if 0 < l < n) or default_exit_layers(n)
    head = cfg.vocab_size * cfg.hidden_size
    total = max(cfg.num_params, head)
    shortlist = getattr(backend, "shortlist", None)
    short = (len(shortlist) if shortlist is not None else cfg.vocab_size) * cfg.hidden_size
    return SpecConfig(layers=layers, layer=layers[len(layers) // 2], head_share=head / total, short_share=short / total)
