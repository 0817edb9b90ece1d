"""The model backend interface (DESIGN.md) and its torch implementation."""

from __future__ import annotations

import logging
from typing import Protocol

import torch
from torch import Tensor

from models import threads as torch_threads
from models.config import ModelConfig
from models.cuda_graph import CapturedStep
from models.llama import KVCache, LlamaModel, linear

log = logging.getLogger(__name__)

PREFILL_CHUNK = 512
"""Prefill runs in chunks of this many tokens so the [T, S] attention mask stays small."""

MAX_CAPTURED_TOKENS = 16
"""Steps of up to this many tokens (decoding, drafts side by side, verify passes) replay as
CUDA graphs on a GPU; longer ones (prefill, a pasted edit) run eagerly."""


class Backend(Protocol):
    """A causal LM with an explicit, truncatable KV cache and per-layer access.

    Every call appends the new positions to the cache; `length` is how many positions
    the cache holds (in its first layer). Logits are float32 on the backend's device.
    """

    config: ModelConfig
    device: torch.device
    name: str

    @property
    def length(self) -> int: ...
    @property
    def batch(self) -> int: ...
    def reset(self, batch: int = 1) -> None: ...
    def prefill(self, ids: Tensor, all_logits: bool = False) -> Tensor: ...
    def step(self, ids: Tensor | None = None, embeds: Tensor | None = None) -> Tensor: ...
    def step_states(self, ids: Tensor, layers: list[int]) -> tuple[Tensor, dict[int, Tensor]]: ...
    def step_tree(self, ids: Tensor, positions: Tensor, visible: Tensor) -> Tensor: ...
    def truncate(self, n: int) -> None: ...
    def select(self, rows: Tensor) -> None: ...
    def embed(self, ids: Tensor) -> Tensor: ...
    def run_layers(self, h: Tensor, start: int, stop: int) -> Tensor: ...
    def exit_logits(self, h: Tensor, layer: int) -> Tensor: ...
    def draft_logits(self, h: Tensor, layer: int) -> Tensor: ...
    def fill_kv(self, h: Tensor, start: int, stop: int) -> None: ...
    def layer_lengths(self) -> list[int]: ...
    def prepare_partial(self) -> None: ...
    def prepare_full(self) -> None: ...


class TorchBackend:
    """Eager torch backend over our own `LlamaModel` and `KVCache`."""

    name = "torch"

    def __init__(self, model: LlamaModel, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.cfg
        self.dtype = next(model.parameters()).dtype
        self.exit_heads: dict[int, torch.nn.Module] = {}
        self.exit_thresholds: dict[int, float] = {}  # calibrated early-exit confidence per head layer
        self.shortlist: Tensor | None = None  # [K] token ids that drafting may propose
        self._short_weight: Tensor | None = None  # [K, D] their rows of the LM head
        self.cache = KVCache(self.config, 1, self.dtype, self.device)
        # On a GPU, steps replay as CUDA graphs (models/cuda_graph.py), captured per cache
        # buffers, batch and token count; off after a failed capture.
        self.cuda_graphs = self.device.type == "cuda"
        self._steps: dict[tuple[int, int, int], CapturedStep] = {}
        self.replays = 0

    def attach_heads(self, adapters: dict[int, torch.nn.Module], shortlist: Tensor | None,
                     thresholds: dict[int, float] | None = None) -> None:
        """Use trained exit adapters (by layer), a drafting shortlist and early-exit thresholds."""
        self.exit_heads = {l: a.to(self.device, self.dtype) for l, a in adapters.items()}
        self.exit_thresholds = {l: t for l, t in (thresholds or {}).items() if l in self.exit_heads}
        self.shortlist = shortlist.to(self.device) if shortlist is not None else None
        self._short_weight = None
        if self.shortlist is not None:
            self._short_weight = self.model.lm_head.weight.detach()[self.shortlist].contiguous()

    @property
    def length(self) -> int:
        return self.cache.lengths[0]

    @property
    def batch(self) -> int:
        return self.cache.batch

    def layer_lengths(self) -> list[int]:
        """Fill length of every layer (they differ only mid-speculation)."""
        return list(self.cache.lengths)

    def reset(self, batch: int = 1) -> None:
        """Drop the cache and start over with `batch` rows."""
        if self.cuda_graphs and self.cache.batch == batch:
            self.cache.truncate(0)  # keep the buffers, and the steps captured over them
        else:
            self.cache = KVCache(self.config, batch, self.dtype, self.device)

    @torch.inference_mode()
    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings: [B, T] -> [B, T, D]."""
        torch_threads.for_torch()
        return self.model.model.embed_tokens(ids.to(self.device))

    @torch.inference_mode()
    def run_layers(self, h: Tensor, start: int, stop: int) -> Tensor:
        """Layers [start, stop) on h [B, T, D]; appends those layers' K/V."""
        torch_threads.for_torch()
        return self.model.run_layers(h.to(self.dtype), start, stop, self.cache)

    @torch.inference_mode()
    def exit_logits(self, h: Tensor, layer: int) -> Tensor:
        """Logits [B, T, V] read from the residual stream after `layer` layers."""
        head = self.exit_heads.get(layer)
        if head is not None and layer < self.config.num_layers:
            h = head(h)
        return self.model.logits(h)

    @torch.inference_mode()
    def draft_logits(self, h: Tensor, layer: int) -> Tensor:
        """Cheap logits [B, T, V] for drafting after `layer` layers: the exit head, and only the
        shortlist's rows of the LM head (-inf elsewhere); the full head without a shortlist."""
        if self._short_weight is None:
            return self.exit_logits(h, layer)
        head = self.exit_heads.get(layer)
        if head is not None:
            h = head(h)
        short = linear(self.model.model.norm(h), self._short_weight).float()  # [B, T, K]
        out = torch.full((*short.shape[:-1], self.config.vocab_size), float("-inf"), device=short.device)
        out[..., self.shortlist] = short
        return out

    @torch.inference_mode()
    def fill_kv(self, h: Tensor, start: int, stop: int) -> None:
        """Fill skipped layers [start, stop) from an exited state (state copying)."""
        torch_threads.for_torch()
        self.model.fill_kv(h.to(self.dtype), start, stop, self.cache)

    @torch.inference_mode()
    def step(self, ids: Tensor | None = None, embeds: Tensor | None = None) -> Tensor:
        """Extend the cache by ids [B, T] (or embeds [B, T, D]); logits [B, T, V]."""
        h = self.embed(ids) if embeds is None else embeds.to(self.device, self.dtype)
        out = self._captured(h)
        if out is not None:
            return out
        h = self.run_layers(h, 0, self.config.num_layers)
        return self.model.logits(h)

    @torch.inference_mode()
    def step_states(self, ids: Tensor, layers: list[int]) -> tuple[Tensor, dict[int, Tensor]]:
        """As `step`, and the residual stream [B, T, D] after each of `layers` (exit layers):
        what speculation's acceptance probes read from a full pass."""
        h, states, done = self.embed(ids), {}, 0
        for cut in sorted(set(layers)):
            h = states[cut] = self.run_layers(h, done, cut)
            done = cut
        h = self.run_layers(h, done, self.config.num_layers)
        return self.model.logits(h), states

    @torch.inference_mode()
    def step_tree(self, ids: Tensor, positions: Tensor, visible: Tensor) -> Tensor:
        """Append ids [1, T] at `positions` [T], token i attending only to the keys that
        `visible` [T, length + T] marks; logits [1, T, V]. Several drafts decode together
        this way, sharing the prompt's cache, one row of keys per draft token."""
        if self.config.sliding_window is not None:
            raise NotImplementedError("tree steps need full attention")
        h = self.embed(ids)
        out = self._captured(h, positions.cpu(), visible.cpu())
        if out is not None:
            return out
        h = self.model.run_tree(h, positions.to(self.device), visible, self.cache)
        return self.model.logits(h)

    def _captured(self, h: Tensor, positions: Tensor | None = None, visible: Tensor | None = None) -> Tensor | None:
        """Logits [B, T, V] of a step on h [B, T, D] replayed as a CUDA graph, or None where the
        step runs eagerly (no GPU, a long step, layers at different lengths mid-speculation).
        A tree step gives its rotary `positions` [T] and `visible` [T, length + T]; a plain
        step is causal at the next positions."""
        c = self.cache
        n, (b, t, _) = c.lengths[0], h.shape
        if (not self.cuda_graphs or t > MAX_CAPTURED_TOKENS or c.lengths.count(n) != len(c.lengths)
                or self.config.sliding_window is not None):
            return None
        c.reserve(n + t)
        slots = torch.arange(n, n + t)
        full = torch.zeros(t, c.capacity, dtype=torch.bool)  # [T, C]; the unfilled tail stays masked
        if visible is None:
            positions = slots
            full[:, : n + t] = torch.ones(t, n + t, dtype=torch.bool).tril(n)
        else:
            full[:, : n + t] = visible
        key = (c.version, b, t)
        step = self._steps.get(key)
        if step is None:
            self._steps = {k: s for k, s in self._steps.items() if k[0] == c.version}  # other buffers' steps
            try:
                step = self._steps[key] = CapturedStep(self.model, c, h, slots, positions, full)
            except RuntimeError as e:  # never fatal: the eager step computes the same
                log.warning("CUDA graph capture failed, decoding without graphs: %s", e)
                self.cuda_graphs = False
                return None
        out = step(h, slots, positions, full)
        c.lengths = [n + t] * len(c.lengths)
        self.replays += 1
        return out

    @torch.inference_mode()
    def prefill(self, ids: Tensor, all_logits: bool = False) -> Tensor:
        """Extend the cache by ids [B, T] in chunks; logits [B, 1, V] (or [B, T, V])."""
        if ids.shape[1] == 0:
            raise ValueError("prefill needs at least one token")
        outs = []
        for i in range(0, ids.shape[1], PREFILL_CHUNK):
            h = self.run_layers(self.embed(ids[:, i : i + PREFILL_CHUNK]), 0, self.config.num_layers)
            if all_logits:
                outs.append(self.model.logits(h))
        if all_logits:
            return torch.cat(outs, dim=1)
        return self.model.logits(h[:, -1:])

    def truncate(self, n: int) -> None:
        """Roll the cache back to its first n positions."""
        self.cache.truncate(n)

    def prepare_partial(self) -> None:
        """Get ready to run part of the layers (early exit, speculation): nothing to do here."""

    def prepare_full(self) -> None:
        """Back to full passes only (speculation stopped drafting): nothing to do here."""

    def select(self, rows: Tensor) -> None:
        """Keep (or repeat) the cache rows given by `rows` [B']."""
        self.cache.select(rows.to(self.device))
