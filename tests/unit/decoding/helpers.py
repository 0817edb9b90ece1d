"""Shared builders for the decoding tests."""

from __future__ import annotations

import torch

from models.exit_heads import ExitAdapter
from models.loading import LoadedModel, load_model


def headed_tiny(seed: int, shortlist_every: int | None = None,
                thresholds: dict[int, float] | None = None) -> LoadedModel:
    """A tiny random model (4 layers) with random exit adapters at layers 1 and 2, an optional
    shortlist (every n-th token id) and optional early-exit thresholds."""
    loaded = load_model("tiny")
    torch.manual_seed(seed)
    adapters = {}
    for layer in (1, 2):
        a = ExitAdapter(loaded.backend.config.hidden_size, 8)
        torch.nn.init.normal_(a.up.weight, std=0.05)
        adapters[layer] = a.eval().requires_grad_(False)
    shortlist = torch.arange(0, loaded.backend.config.vocab_size, shortlist_every) if shortlist_every else None
    loaded.backend.attach_heads(adapters, shortlist, thresholds)
    return loaded
