"""Greedy and sampled decoding of one draft, with monitors and stopping rules."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from decoding.stopping import StopRules
from models.backend import Backend
from monitors.base import Monitor
from monitors.vocab import VocabIndex

log = logging.getLogger(__name__)

T = TypeVar("T")


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


def _answers(monitors: list[Monitor], ask: Callable[[Monitor], T | None], drop_done: bool) -> list[T]:
    """`ask(m)` of each monitor that is not done, where not None; a monitor that fails is
    dropped (it steps aside, the draft goes on), and with `drop_done` so is one that is done."""
    out = []
    for m in list(monitors):
        try:
            if m.done:
                if drop_done:
                    monitors.remove(m)
                continue
            answer = ask(m)
        except Exception:
            log.exception("monitor %s failed; decoding goes on without it", type(m).__name__)
            monitors.remove(m)
            continue
        if answer is not None:
            out.append(answer)
    return out


def combined_mask(monitors: list[Monitor]) -> Tensor | None:
    """AND of the active monitors' masks; drops monitors that are done or that fail."""
    masks = _answers(monitors, lambda m: m.allowed(), drop_done=True)
    return functools.reduce(torch.logical_and, masks) if masks else None


def combined_bias(monitors: list[Monitor]) -> Tensor | None:
    """Sum of the logit bonuses [V] of the monitors that prefer some allowed tokens (a
    `bias()` method: the name monitor's affinity); drops monitors that fail, keeps done ones
    (a drafter may roll back to where they apply)."""
    biases = _answers(monitors, lambda m: m.bias() if hasattr(m, "bias") else None, drop_done=False)
    return functools.reduce(torch.add, biases) if biases else None


def accept_all(monitors: list[Monitor], token: int) -> None:
    """Advance every monitor by `token`; one that fails is dropped."""
    for m in list(monitors):
        try:
            m.accept(token)
        except Exception:
            log.exception("monitor %s failed; decoding goes on without it", type(m).__name__)
            monitors.remove(m)


class Drafting:
    """One draft in progress: its monitors, its bytes, and the per-token decisions (masks,
    branching, stop-on-uncertain, end of sequence, stopping rules) that every decoder shares.

    `reason` is empty while the draft is live and says why it ended once it has.
    """

    def __init__(self, vocab: VocabIndex, monitors: Sequence[Monitor], rules: StopRules, heal: bytes,
                 eos_ids: set[int], temperature: float = 0.0, top_p: float = 1.0,
                 generator: torch.Generator | None = None, branch: int = 0, uncertain: float = 0.0):
        self.vocab, self.rules, self.heal, self.eos_ids = vocab, rules, heal, eos_ids
        self.temperature, self.top_p, self.generator, self.uncertain = temperature, top_p, generator, uncertain
        self.active = list(monitors)
        self.branch = branch
        self.branched = branch == 0
        self.out = bytearray()
        self.draft = Draft("")
        self.reason = ""

    def fork(self) -> Drafting:
        """An independent copy (monitors forked) that may go on differently."""
        new = Drafting(self.vocab, [m.fork() for m in self.active], self.rules, self.heal, self.eos_ids,
                       self.temperature, self.top_p, self.generator, self.branch, self.uncertain)
        new.branched, new.out, new.reason = self.branched, bytearray(self.out), self.reason
        d = self.draft
        new.draft = Draft("", list(d.token_ids), list(d.logprobs), list(d.confidences), list(d.margins), list(d.ends))
        return new

    @property
    def healed(self) -> bool:
        return len(self.out) >= len(self.heal)

    def mask(self) -> Tensor | None:
        """The allowed tokens [V] (None: all); an unsatisfiable constraint ends the draft (reason
        "monitor") and returns an all-False mask."""
        mask = combined_mask(self.active)
        if mask is not None and not bool(mask.any()):
            # Monitors disagree: the essential ones (re-typing what the user typed) win for this
            # token; the others see it as a violation and step aside.
            essential = [m for m in self.active if getattr(m, "essential", False) and not m.done]
            mask = combined_mask(essential) if essential else mask
            if mask is not None and not bool(mask.any()):
                self.reason = "monitor"  # the constraint cannot be met: end the draft, never crash
        return mask

    def constrain(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        """`logits` [V] with the monitors' bonuses added and the tokens off `mask` at -inf."""
        bias = combined_bias(self.active)
        scores = logits if bias is None else logits + bias.to(logits.device, logits.dtype)
        return scores if mask is None else scores.masked_fill(~mask.to(logits.device), float("-inf"))

    def pick(self, logits: Tensor) -> int | None:
        """Choose the next token from logits [V] and take it; None once the draft has ended."""
        mask = self.mask()
        if self.reason:
            return None
        scores = self.constrain(logits, mask)
        deliberate = False
        if not self.branched and self.healed:
            self.branched = deliberate = True
            token = int(torch.topk(scores, self.branch + 1).indices[-1])
        else:
            token = choose(scores, self.temperature, self.top_p, self.generator)
        return token if self.take(token, logits, scores, deliberate) else None

    def take(self, token: int, logits: Tensor, scores: Tensor, deliberate: bool = False) -> bool:
        """Append `token`, chosen from `scores` [V] (the masked logits); False if the draft ends here."""
        probs = torch.softmax(scores, -1)  # [V], the masked distribution
        top2 = torch.topk(probs, 2)
        conf = float(probs[token])
        # How far the token leads the best other one (p1 - p2 for a greedy choice).
        margin = conf - float(top2.values[1] if int(top2.indices[0]) == token else top2.values[0])
        # Re-typing the healed text is no guess; a token that goes past it is.
        retyping = len(self.out) + len(self.vocab.token_bytes(token)) <= len(self.heal)
        if self.uncertain > 0 and not retyping and not deliberate and margin < self.uncertain:
            self.reason = "uncertain"
            return False
        if token in self.eos_ids:
            self.reason = "eos"
            return False
        d = self.draft
        d.token_ids.append(token)
        d.logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        d.confidences.append(conf)
        d.margins.append(margin)
        accept_all(self.active, token)
        self.out += self.vocab.token_bytes(token)
        d.ends.append(-1)
        if self.healed:
            text = self.text()
            d.ends[-1] = len(text)
            if self.rules.cut(text) is not None:
                self.reason = "rule"
                return False
        return True

    def text(self, end: int | None = None) -> str:
        """The visible text so far (past the healed part), up to byte `end` of the output."""
        return bytes(self.out[len(self.heal) : end]).decode("utf-8", errors="ignore")

    def shown(self) -> str:
        """The text a finished draft shows (the stopping rules' trimming applied)."""
        if not self.healed:
            return ""
        # An uncertain stop keeps the confident part of the last line: that part is the suggestion.
        complete = self.reason in ("rule", "eos", "uncertain")
        # A draft cut in the middle of a constrained name (`Graph.add_ed`) does not show the
        # half name: it is no attribute that exists.
        cut = max(_answers(self.active, lambda m: m.unfinished() if hasattr(m, "unfinished") else None,
                           drop_done=False), default=0)
        end = max(len(self.heal), len(self.out) - cut)
        return self.rules.finish(self.text(end), complete=complete)

    def finish(self, reason: str, ms: float) -> Draft:
        """The finished draft; `reason` applies if it is still live (a budget ran out)."""
        self.reason = self.reason or reason
        d = self.draft
        d.text = self.shown()
        d.stop_reason = self.reason
        n = len(d.token_ids)
        d.stats = {"tokens": n, "decode_ms": ms, "ms_per_token": ms / n if n else math.nan}
        return d


def out_of_budget(budget: Budget, n_tokens: int) -> str:
    """Why decoding must stop before another token ("" if it may go on)."""
    if budget.cancelled():
        return "cancelled"
    if time.perf_counter() > budget.deadline:
        return "time"
    if n_tokens >= budget.max_new_tokens:
        return "max_tokens"
    return ""


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
    d = Drafting(vocab, monitors, rules, heal, eos_ids, temperature, top_p, generator, branch, uncertain)
    t0 = time.perf_counter()
    while not (stop := out_of_budget(budget, len(d.draft.token_ids))):
        token = d.pick(logits)
        if token is None or len(d.draft.token_ids) >= budget.max_new_tokens:
            break
        if stepper is not None:
            logits = stepper.next_logits(token, d.active)
        else:
            logits = backend.step(torch.tensor([[token]]))[0, -1]
    if stepper is not None:
        stepper.finish()
    draft = d.finish(stop or "max_tokens", (time.perf_counter() - t0) * 1000)
    if stepper is not None:
        draft.stats |= {f"{stepper.prefix}_{k}": float(v) for k, v in stepper.stats.items()}
    return draft


def novel(text: str, others: Sequence[str]) -> bool:
    """True when a draft's text is a suggestion of its own: not blank, not a copy of another."""
    return bool(text.strip()) and text not in others


def decode_together(
    backend: Backend,
    logits: Tensor,
    drafts: list[Drafting],
    budget: Budget,
    spawn: Callable[[int], Drafting] | None = None,
    spare: int = 0,
) -> list[Draft]:
    """Decode several drafts from the same prompt at once: one forward pass per token for all.

    The drafts' tokens go side by side into the one cache after the prompt, each seeing the
    prompt and its own earlier tokens only (a tree mask), so no cache is copied and the
    prompt's keys are read once per pass. Drafts whose tokens are all the same so far (the
    healed text, before they branch) share their positions. On a memory-bound CPU a pass
    over 3 tokens costs little more than over 1 (BENCHMARKS.md), so k drafts cost far less
    than k runs. The cache is rolled back to the prompt afterwards.

    A draft that ends blank, or as a copy of another, is replaced by `spawn(i)` (the next
    branch, i = len(drafts), len(drafts) + 1, ...) while `spare` replacements are left, so
    that k drafts are k distinct suggestions where the model has them.
    """
    prompt_len = backend.length
    t0 = time.perf_counter()
    keys: dict[tuple[int, ...], int] = {}  # a token history -> the cache index of its last token
    drafts = list(drafts)
    row_logits = [logits] * len(drafts)
    stop = ""
    while True:
        live = [i for i, d in enumerate(drafts) if not d.reason]
        if not live or (stop := out_of_budget(budget, min(len(drafts[i].draft.token_ids) for i in live))):
            break
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in live:
            if drafts[i].pick(row_logits[i]) is not None and len(drafts[i].draft.token_ids) < budget.max_new_tokens:
                groups.setdefault(tuple(drafts[i].draft.token_ids), []).append(i)
                continue
            drafts[i].reason = drafts[i].reason or "max_tokens"
            # (An unsure draft that ends blank is no suggestion on purpose: it is not replaced.)
            if spawn is not None and spare > 0 and drafts[i].reason != "uncertain" and not novel(drafts[i].shown(), [d.shown() for d in drafts
                                                                                 if d.reason and d is not drafts[i]]):
                spare -= 1
                drafts.append(spawn(len(drafts)))  # decoded from the next step on, from the prompt
                row_logits.append(logits)
        if not groups and all(d.reason for d in drafts):
            break
        if not groups:
            continue
        n, t = backend.length, len(groups)
        visible = torch.zeros(t, n + t, dtype=torch.bool)  # [T, S]
        visible[:, :prompt_len] = True
        positions = torch.empty(t, dtype=torch.long)
        for j, hist in enumerate(groups):
            for m in range(1, len(hist)):  # the history's earlier tokens
                visible[j, keys[hist[:m]]] = True
            visible[j, n + j] = True
            keys[hist] = n + j
            positions[j] = prompt_len + len(hist) - 1
        ids = torch.tensor([[hist[-1] for hist in groups]])
        out = backend.step_tree(ids, positions, visible)[0]  # [T, V]
        for j, rows in enumerate(groups.values()):
            for i in rows:
                row_logits[i] = out[j]
    backend.truncate(prompt_len)
    ms = (time.perf_counter() - t0) * 1000
    return [d.finish(stop or "max_tokens", ms) for d in drafts]
