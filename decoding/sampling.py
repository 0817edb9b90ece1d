"""Greedy and sampled decoding of one draft, with monitors and stopping rules."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from decoding.stopping import StopRules
from models.backend import Backend
from monitors.base import Monitor
from monitors.vocab import VocabIndex

log = logging.getLogger(__name__)


@dataclass
class Draft:
    """One suggestion: the text to insert at the cursor, with its tokens and stats."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)  # p of each token as chosen (masks applied)
    margins: list[float] = field(default_factory=list)  # p(token) - p(best other token), masks applied
    ends: list[int] = field(default_factory=list)  # visible text length after each token (-1: still healing)
    stop_reason: str = ""
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean token log-probability (0 for an empty draft)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class Stepper(Protocol):
    """Gives the logits after each chosen token in place of a plain full step (speculation,
    early exit); `stats` are counters reported under `prefix`."""

    prefix: str
    stats: dict[str, int]

    def next_logits(self, token: int, monitors: list[Monitor]) -> Tensor: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class Budget:
    """Limits on one draft."""

    max_new_tokens: int
    deadline: float  # time.perf_counter() value after which decoding stops
    cancelled: Callable[[], bool] = lambda: False


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Logits [V] with everything outside the top-p nucleus set to -inf (new tensor)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses p
    return logits.scatter(0, order[drop], float("-inf"))


def choose(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Argmax when temperature is 0 or no generator is given; otherwise sample."""
    if temperature <= 0 or generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(top_p_filter(logits / temperature, top_p), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def combined_mask(monitors: list[Monitor]) -> Tensor | None:
    """AND of the active monitors' masks; drops monitors that are done or that fail."""
    mask = None
    for m in list(monitors):
        try:
            if m.done:
                monitors.remove(m)
                continue
            allowed = m.allowed()
        except Exception:  # a broken monitor steps aside; the draft goes on
            log.exception("monitor %s failed; decoding goes on without it", type(m).__name__)
            monitors.remove(m)
            continue
        if allowed is not None:
            mask = allowed if mask is None else mask & allowed
    return mask


def accept_all(monitors: list[Monitor], token: int) -> None:
    """Advance every monitor by `token`; one that fails is dropped."""
    for m in list(monitors):
        try:
            m.accept(token)
        except Exception:
            log.exception("monitor %s failed; decoding goes on without it", type(m).__name__)
            monitors.remove(m)


def decode_draft(
    backend: Backend,
    logits: Tensor,
    vocab: VocabIndex,
    monitors: Sequence[Monitor],
    rules: StopRules,
    heal: bytes,
    eos_ids: set[int],
    budget: Budget,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    branch: int = 0,
    stepper: Stepper | None = None,
    uncertain: float = 0.0,
) -> Draft:
    """Decode one draft from `logits` [V] (the prediction after the prompt in the cache).

    `branch` = i > 0 takes the i-th most likely token at the first free step (after the
    healed text), then goes on greedily: distinct drafts that each start where the model
    itself hesitates. With a `stepper`, the logits after each token come from it: a
    speculator's verified drafts (greedy only; the same tokens, fewer full passes) or an
    early exiter's confident layers.

    Stop-on-uncertain: once past the healed text, a token that leads the next best one by
    less than `uncertain` probability (p1 - p2 after the masks; on the dev set this margin
    separates right from wrong a little better than p1 alone) ends the draft before it,
    so what is shown is the confident part; an unsure first token leaves no suggestion. The
    deliberate branch token of draft i > 0 is exempt: it is an alternative by design.
    """
    active = list(monitors)
    branched = branch == 0
    out = bytearray()
    draft = Draft("")
    reason = "max_tokens"
    t0 = time.perf_counter()
    for _ in range(budget.max_new_tokens):
        if budget.cancelled():
            reason = "cancelled"
            break
        if time.perf_counter() > budget.deadline:
            reason = "time"
            break
        mask = combined_mask(active)
        if mask is not None and not bool(mask.any()):
            # Monitors disagree: the essential ones (re-typing what the user typed) win for this
            # token; the others see it as a violation and step aside.
            essential = [m for m in active if getattr(m, "essential", False) and not m.done]
            mask = combined_mask(essential) if essential else mask
            if mask is not None and not bool(mask.any()):
                reason = "monitor"  # the constraint cannot be met: end the draft, never crash
                break
        scores = logits if mask is None else logits.masked_fill(~mask.to(logits.device), float("-inf"))
        deliberate = False
        if not branched and len(out) >= len(heal):
            branched = deliberate = True
            token = int(torch.topk(scores, branch + 1).indices[-1])
        else:
            token = choose(scores, temperature, top_p, generator)
        probs = torch.softmax(scores, -1)  # [V], the masked distribution
        top2 = torch.topk(probs, 2)
        conf = float(probs[token])
        # How far the token leads the best other one (p1 - p2 for a greedy choice).
        margin = conf - float(top2.values[1] if int(top2.indices[0]) == token else top2.values[0])
        # Re-typing the healed text is no guess; a token that goes past it is.
        retyping = len(out) + len(vocab.token_bytes(token)) <= len(heal)
        if uncertain > 0 and not retyping and not deliberate and margin < uncertain:
            reason = "uncertain"
            break
        if token in eos_ids:
            reason = "eos"
            break
        draft.token_ids.append(token)
        draft.logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        draft.confidences.append(conf)
        draft.margins.append(margin)
        accept_all(active, token)
        out += vocab.token_bytes(token)
        draft.ends.append(-1)
        if len(out) >= len(heal):
            text = bytes(out[len(heal) :]).decode("utf-8", errors="ignore")
            draft.ends[-1] = len(text)
            if rules.cut(text) is not None:
                reason = "rule"
                break
        if stepper is not None:
            logits = stepper.next_logits(token, active)
        else:
            logits = backend.step(torch.tensor([[token]]))[0, -1]
    if stepper is not None:
        stepper.finish()
    healed = len(out) >= len(heal)
    text = bytes(out[len(heal) :]).decode("utf-8", errors="ignore")
    # An uncertain stop keeps the confident part of the last line: that part is the suggestion.
    draft.text = rules.finish(text, complete=reason in ("rule", "eos", "uncertain")) if healed else ""
    draft.stop_reason = reason
    n = len(draft.token_ids)
    ms = (time.perf_counter() - t0) * 1000
    draft.stats = {"tokens": n, "decode_ms": ms, "ms_per_token": ms / n if n else math.nan}
    if stepper is not None:
        draft.stats |= {f"{stepper.prefix}_{k}": float(v) for k, v in stepper.stats.items()}
    return draft
