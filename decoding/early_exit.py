"""Dynamic early exit (Sun et al.): per token, stop at the first layer that is sure enough.

For each new token the layers run in segments up to the exit-head layers. After each
such layer l, the exit head's (shortlisted) distribution, with the monitors' mask
applied, gives a confidence; when it reaches the layer's calibrated threshold, the token's
logits come from that head and the layers above l are skipped. Later tokens still attend
to this position in every layer, so the skipped layers get K/V projected from the exited
hidden state, with RoPE at the right position ("state copying", `Backend.fill_kv`).

Unlike self-speculation this changes the output where an exit head is confidently
wrong; the thresholds (`calibrate`) bound how often that happens, and BENCHMARKS.md
reports the quality change next to the layers saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from decoding.sampling import combined_bias
from decoding.speculative import draft_mask
from models.backend import Backend
from monitors.base import Monitor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExitConfig:
    """Calibrated thresholds by exit layer (layers without one are never exited at)."""

    thresholds: dict[int, float]

    @property
    def layers(self) -> list[int]:
        return sorted(self.thresholds)


def exit_config(backend: Backend) -> ExitConfig | None:
    """The thresholds stored with the backend's exit heads; None (with a log line) without."""
    thresholds = getattr(backend, "exit_thresholds", {}) or {}
    n = backend.config.num_layers
    usable = {int(l): float(t) for l, t in thresholds.items() if 0 < int(l) < n and 0 < float(t) <= 1}
    if not usable:
        log.info("early exit needs exit heads with calibrated thresholds; this model has none, so it is off")
        return None
    return ExitConfig(usable)


def calibrate(conf: Tensor, agree: Tensor, precision: float = 0.95, min_support: int = 50) -> float | None:
    """Smallest threshold whose exits agree with the full model at least `precision` of the time.

    conf [N]: the exit head's top probability at N positions; agree [N]: whether its top
    token is the full model's. None when no threshold with `min_support` exits gets there.
    """
    order = torch.argsort(conf, descending=True)
    hits = agree[order].float().cumsum(0)
    count = torch.arange(1, len(order) + 1, dtype=torch.float)
    ok = ((hits / count) >= precision) & (count >= min_support)
    if not bool(ok.any()):
        return None
    k = int(torch.nonzero(ok).max())  # the most exits that keep the precision
    return float(conf[order][k])


class EarlyExiter:
    """Gives the decoder the logits after each chosen token, exiting early where it is sure."""

    def __init__(self, backend: Backend, cfg: ExitConfig):
        self.backend = backend
        self.cfg = cfg
        self.n_layers = backend.config.num_layers
        self.prefix = "exit"  # of its counters in a draft's stats
        self.stats = {"tokens": 0, "layers": 0} | {f"at_{l}": 0 for l in cfg.layers}

    @torch.inference_mode()
    def next_logits(self, token: int, monitors: list[Monitor]) -> Tensor:
        """Logits [V] after `token`, which the decoder just chose and the monitors accepted."""
        b = self.backend
        mask = draft_mask(monitors)
        bias = combined_bias(monitors)
        h = b.embed(torch.tensor([[token]]))
        done = 0
        self.stats["tokens"] += 1
        for layer in self.cfg.layers:
            h = b.run_layers(h, done, layer)
            done = layer
            draft = b.draft_logits(h, layer)[0, -1]  # [V], -inf off the shortlist
            if bias is not None:
                draft = draft + bias.to(draft.device)  # the exit decision sees the decoder's scores
            if mask is not None:
                draft = draft.masked_fill(~mask.to(draft.device), float("-inf"))
            if not bool(torch.isfinite(draft).any()):
                continue
            if float(torch.softmax(draft, -1).max()) >= self.cfg.thresholds[layer]:
                b.fill_kv(h, layer, self.n_layers)  # the skipped layers still get this position
                self.stats["layers"] += layer
                self.stats[f"at_{layer}"] += 1
                return b.exit_logits(h, layer)[0, -1]
        h = b.run_layers(h, done, self.n_layers)
        self.stats["layers"] += self.n_layers
        return b.exit_logits(h, self.n_layers)[0, -1]

    def finish(self) -> None:
        """Nothing is held past the last token."""
