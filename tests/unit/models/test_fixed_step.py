"""The fixed-shape step that CUDA graphs replay (models/cuda_graph.py), checked on the CPU.

The capture itself needs a GPU (test_cuda.py); here the same step body runs eagerly: its
logits and cache writes against the usual step, and the backend's bookkeeping around the
replays (slots, masks, lengths, cache growth, one capture per buffers, batch and length).
"""

from __future__ import annotations

import pytest
import torch

import models.backend as backend_module
from decoding.settings import Settings
from models.backend import TorchBackend
from models.loading import LoadedModel, load_model
from tests.unit.models.helpers import CODE, prompt_drafts


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny")


def _ids(loaded: LoadedModel, n: int) -> torch.Tensor:
    ids = loaded.tokenizer.encode(CODE * 40)[:n]
    assert len(ids) == n
    return torch.tensor([ids])


def test_fixed_shape_step_gives_the_eager_logits_and_cache(tiny: LoadedModel) -> None:
    model = tiny.backend.model
    eager, fixed = TorchBackend(model), TorchBackend(model)
    ids = _ids(tiny, 40)
    eager.prefill(ids[:, :30])
    fixed.prefill(ids[:, :30])
    c = fixed.cache
    c.reserve(64)
    with torch.inference_mode():
        for t in (1, 3):  # one token, then three (a verify pass), causal
            n = c.lengths[0]
            new = ids[:, n : n + t]
            want = eager.step(new)
            slots = torch.arange(n, n + t)
            visible = torch.zeros(t, c.capacity, dtype=torch.bool)
            visible[:, : n + t] = torch.ones(t, n + t, dtype=torch.bool).tril(n)
            got = model.run_fixed(fixed.embed(new), slots, slots, visible, c)
            c.lengths = [n + t] * len(c.lengths)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        # A tree step: two drafts side by side at the same position, each seeing only itself.
        n = c.lengths[0]
        new, positions = ids[:, n : n + 2], torch.tensor([n, n])
        tree = torch.zeros(2, n + 2, dtype=torch.bool)
        tree[:, :n] = True
        tree[0, n], tree[1, n + 1] = True, True
        want = eager.step_tree(new, positions, tree)
        visible = torch.zeros(2, c.capacity, dtype=torch.bool)
        visible[:, : n + 2] = tree
        got = model.run_fixed(fixed.embed(new), torch.arange(n, n + 2), positions, visible, c)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for a, b in zip(eager.cache.k + eager.cache.v, c.k + c.v):
        torch.testing.assert_close(a[:, :, : n + 2], b[:, :, : n + 2], atol=1e-6, rtol=0)


class EagerStep:
    """Stands in for CapturedStep on the CPU: the same interface, the step body run as it is."""

    made = 0

    def __init__(self, model, cache, h, slots, positions, visible) -> None:  # noqa: ANN001
        EagerStep.made += 1
        self.model, self.cache, self.shape = model, cache, (h.shape, visible.shape)

    def __call__(self, h: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor,
                 visible: torch.Tensor) -> torch.Tensor:
        assert (h.shape, visible.shape) == self.shape  # what a graph would need: nothing moves
        return self.model.run_fixed(h, slots, positions, visible, self.cache)


def test_replayed_steps_give_the_eager_drafts(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Greedy, drafts side by side and speculation through the replay path: the same tokens as
    eager decoding, across cache growth (prompts near the 256-position start) and requests."""
    monkeypatch.setattr(backend_module, "CapturedStep", EagerStep)
    replayed = TorchBackend(tiny.backend.model)
    replayed.cuda_graphs = True
    other = LoadedModel(tiny.spec, replayed, tiny.tokenizer, tiny.fim, 0.0, "tiny")
    for wire in ({"drafts": 1}, {"drafts": 3}, {"drafts": 1, "speculative": True}):
        s = Settings.from_dict({"maxNewTokens": 24, "mode": "block", "timeBudgetMs": 600_000, **wire})[0]
        before = replayed.replays
        assert prompt_drafts(other, s) == prompt_drafts(tiny, s), wire
        assert replayed.replays > before, wire
    assert replayed.cuda_graphs
    made = EagerStep.made
    # A long prompt grows the buffers past their first capacity: new steps for the new buffers.
    cache = replayed.cache
    replayed.reset(1)
    assert replayed.cache is cache  # kept across requests, so are its steps
    version = cache.version
    replayed.prefill(_ids(tiny, 250))
    logits = [replayed.step(torch.tensor([[t]]))[0, -1] for t in _ids(tiny, 20)[0].tolist()]
    assert cache.version > version and cache.capacity >= 270 and replayed.length == 270
    assert EagerStep.made > made
    eager = TorchBackend(tiny.backend.model)
    eager.prefill(_ids(tiny, 250))
    for t, got in zip(_ids(tiny, 20)[0].tolist(), logits):
        torch.testing.assert_close(got, eager.step(torch.tensor([[t]]))[0, -1], atol=1e-5, rtol=0)
    three = _ids(tiny, 23)[:, 20:]  # a 3-token step, as a verify pass: causal among its tokens
    torch.testing.assert_close(replayed.step(three), eager.step(three), atol=1e-5, rtol=0)
    made = EagerStep.made
    replayed.truncate(250)
    for t in _ids(tiny, 20)[0].tolist():  # same buffers, batch and length: no new step
        replayed.step(torch.tensor([[t]]))
    assert EagerStep.made == made
