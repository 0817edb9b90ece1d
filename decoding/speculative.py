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
unit of cost, (1 - a^(d+1)) / (1 - a) / (d * c_draft(E) + c_verify(E)). When no layer
beats plain decoding (gain 1 per full step), rounds are plain steps, with a probe now
and then to notice when drafting would pay.

Code repeats itself, so a second drafter costs nothing: when the last tokens occurred
before (in the prompt or the draft so far), what followed them then is proposed
(prompt lookup), and the full model verifies it in one pass over the 1+k tokens. It is
tried first; the exit-head drafter is the fallback. Both are lossless.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

from models.backend import Backend
from monitors.base import Monitor

log = logging.getLogger(__name__)


@dataclass
class SpecConfig:
    """Where drafting exits and how far it goes; shared across requests, adapted online."""

    layers: list[int]  # exit layers with heads, ascending
    layer: int  # current exit layer
    max_draft: int = 4  # current draft length d
    eta: float = 0.5  # stop drafting below this draft confidence
    probe_every: int = 8  # rounds between acceptance probes of every layer
    alpha: dict[int, float] = field(default_factory=dict)  # per-layer acceptance estimates
    rounds: int = 0
    lookup: int = 8  # most tokens a context-lookup draft proposes (0: no lookup drafts)
    lookup_ngram: int = 3  # tokens that must match before the lookup position
    head_share: float = 0.2  # share of one full step spent in the LM head
    short_share: float = 0.03  # the shortlisted head's share

    def cost(self, layer: int, d: int, n_layers: int) -> float:
        """Cost of a round in full steps: d drafted tokens and a (1+d)-token verify."""
        body = 1.0 - self.head_share
        return d * (body * layer / n_layers + self.short_share) + body * (n_layers - layer) / n_layers + self.head_share

    def adapt(self, n_layers: int) -> None:
        """Pick the layer and draft length with the best expected tokens per unit cost."""
        best = (1.0, self.layer, 0)  # plain decoding: one token per full step
        for layer in self.layers:
            a = min(0.98, max(0.02, self.alpha.get(layer, 0.5)))
            for d in range(1, 9):
                gain = (1 - a ** (d + 1)) / (1 - a) / self.cost(layer, d, n_layers)
                if gain > best[0]:
                    best = (gain, layer, d)
        _, self.layer, self.max_draft = best


class Speculator:
    """Gives the decoder the logits after each chosen token, drafting and verifying ahead."""

    def __init__(self, backend: Backend, cfg: SpecConfig, eos_ids: set[int], context: list[int] | None = None):
        self.backend = backend
        self.cfg = cfg
        self.eos = eos_ids
        self.n_layers = backend.config.num_layers
        self.queue: list[tuple[int, Tensor]] = []  # drafted tokens with the verified logits after them
        self.stats = {"rounds": 0, "drafted": 0, "accepted": 0, "lookup_rounds": 0, "lookup_drafted": 0,
                      "lookup_accepted": 0}
        self._from_lookup = False  # whether the queued drafts came from the context
        self.history: list[int] = list(context or [])[-4096:]  # prompt and chosen tokens, for lookup
        self._seen: dict[tuple[int, ...], int] = {}  # n-gram -> where it last ended in `history`
        self._indexed = 0  # n-grams ending at or before this are in `_seen`
        self._index(len(self.history) - 1)  # the last n-gram is looked up, not found

    def next_logits(self, token: int, monitors: list[Monitor]) -> Tensor:
        """Logits [V] after `token`, which the decoder just chose and the monitors accepted."""
        self._remember(token)
        if self.queue:
            if self.queue[0][0] == token:
                self.stats["accepted"] += 1
                self.stats["lookup_accepted"] += self._from_lookup
                return self.queue.pop(0)[1]
            self.backend.truncate(self.backend.length - len(self.queue))  # drop the unused drafts
            self.queue.clear()
        return self._round(token, monitors)

    def finish(self) -> None:
        """Forget drafts the decoder did not get to (it stopped)."""
        if self.queue:
            self.backend.truncate(self.backend.length - len(self.queue))
            self.queue.clear()

    def _remember(self, token: int) -> None:
        self.history.append(token)

    def _index(self, upto: int) -> None:
        """Index the n-grams that end after `_indexed` and at or before `upto`."""
        n = self.cfg.lookup_ngram
        for end in range(max(self._indexed + 1, n), upto + 1):
            self._seen[tuple(self.history[end - n : end])] = end
        self._indexed = max(self._indexed, upto)

    def _lookup(self) -> list[int]:
        """What followed the last n tokens the previous time they occurred (at most `lookup` tokens)."""
        n, k, here = self.cfg.lookup_ngram, self.cfg.lookup, len(self.history)
        if k <= 0 or here <= n:
            return []
        self._index(here - 1)  # everything before now, so the n-gram does not find itself
        end = self._seen.get(tuple(self.history[-n:]))
        return self.history[end : end + k] if end is not None else []

    @torch.inference_mode()
    def _round(self, token: int, monitors: list[Monitor]) -> Tensor:
        cfg, b = self.cfg, self.backend
        guess = list(itertools.takewhile(lambda t: t not in self.eos, self._lookup()))
        if guess:
            # Verify the lookup draft with the full model: one pass over [token, guess...].
            self.stats["rounds"] += 1
            self.stats["lookup_rounds"] += 1
            full = b.step(torch.tensor([[token, *guess]]))[0]  # [1+k, V]
            self.stats["drafted"] += len(guess)
            self.stats["lookup_drafted"] += len(guess)
            self._from_lookup = True
            self.queue = [(y, full[j + 1]) for j, y in enumerate(guess)]
            return full[0]
        probe = cfg.rounds % cfg.probe_every == 0
        cfg.rounds += 1
        self.stats["rounds"] += 1
        if cfg.max_draft == 0 and not probe:
            return b.step(torch.tensor([[token]]))[0, -1]  # drafting does not pay here
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
            mask = _mask(monitors)
            if mask is not None:
                if not bool(mask.any()):
                    break
                logits = logits.masked_fill(~mask, float("-inf"))
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
        # A monitor still here accepted every drafted token (one that failed was dropped).
        for m in list(monitors):
            try:
                m.rollback(len(drafted))
            except Exception:
                _drop(m, monitors)
        self.stats["drafted"] += len(drafted)
        self.queue = [(y, full[j + 1]) for j, y in enumerate(drafted)]
        self._from_lookup = False
        if probe:
            self._probe(full, early, late, stack, exit_layer)
        return full[0]

    def _probe(self, full: Tensor, early: list[dict[int, Tensor]], late: dict[int, Tensor], stack: Tensor,
               exit_layer: int) -> None:
        """Acceptance per head layer on this round's positions: does its top token match the final one?"""
        want = full.argmax(-1)  # [1+k]
        states = {l: torch.cat([e[l] for e in early], dim=1) for l in early[0]} | late
        states[exit_layer] = stack
        for layer in self.cfg.layers:
            h = states.get(layer)
            if h is None:
                continue
            got = self.backend.draft_logits(h, layer)[0].argmax(-1)
            rate = float((got == want).float().mean())
            old = self.cfg.alpha.get(layer)
            self.cfg.alpha[layer] = rate if old is None else 0.8 * old + 0.2 * rate
        self.cfg.adapt(self.n_layers)


def _drop(m: Monitor, monitors: list[Monitor]) -> None:
    """A monitor that fails while drafting is dropped from the draft, as the decoder does."""
    log.exception("monitor %s failed while drafting; decoding goes on without it", type(m).__name__)
    monitors.remove(m)


def _mask(monitors: list[Monitor]) -> Tensor | None:
    """AND of the monitors' masks. Unlike the decoder's, it keeps monitors that are done:
    they may be needed again once the drafts roll back."""
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
    layers = sorted(l for l in heads if 0 < l < n) or sorted({max(1, n // 4), max(1, n // 3), max(1, n // 2)} - {n})
    head = cfg.vocab_size * cfg.hidden_size
    total = max(cfg.num_params, head)
    shortlist = getattr(backend, "shortlist", None)
    short = (len(shortlist) if shortlist is not None else cfg.vocab_size) * cfg.hidden_size
    return SpecConfig(layers=layers, layer=layers[len(layers) // 2], head_share=head / total, short_share=short / total)
