"""q/k/v and gate/up as one product each: same outputs, no second copy of the weights, training intact."""

from __future__ import annotations

import pytest
import torch

from models.llama import Fused, Linear


def _parts(bias: bool) -> tuple[Linear, Linear, Linear]:
    torch.manual_seed(0)
    return Linear(48, 48, bias=bias), Linear(48, 16, bias=bias), Linear(48, 16, bias=bias)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 40])
def test_one_product_gives_each_layer_s_output(bias: bool, rows: int) -> None:
    parts = _parts(bias)
    fused = Fused(*parts)
    x = torch.randn(1, rows, 48)
    with torch.no_grad():
        want = [p(x) for p in parts]
        got = fused(x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6, rtol=1e-6)


def test_the_layers_become_views_of_the_fused_weight() -> None:
    parts = _parts(bias=True)
    fused = Fused(*parts)
    with torch.no_grad():
        fused(torch.randn(1, 2, 48))
    assert fused.weight is not None and fused.bias is not None
    base = fused.weight.data_ptr()
    assert parts[0].weight.data_ptr() == base  # no second copy
    assert parts[1].weight.data_ptr() == base + 48 * 48 * fused.weight.element_size()
    # A change to a layer's weight (as load_state_dict makes, in place) is the fused weight's.
    with torch.no_grad():
        parts[2].weight.fill_(0.5)
        parts[2].bias.fill_(0.0)
        out = fused(torch.ones(1, 1, 48))[2]
    assert torch.allclose(out, torch.full((1, 1, 16), 24.0))


def test_a_move_rebuilds_the_fused_weight() -> None:
    parts = _parts(bias=False)
    fused = Fused(*parts)
    x = torch.randn(1, 3, 48)
    with torch.no_grad():
        fused(x)
        for p in parts:
            p.to(torch.float64)  # new storage: the old fused weight no longer matches
        got = fused(x.double())
        want = [p(x.double()) for p in parts]
    assert fused.weight is not None and fused.weight.dtype == torch.float64
    for g, w in zip(got, want):
        assert torch.allclose(g, w)


def test_training_keeps_gradients_per_layer() -> None:
    parts = _parts(bias=False)
    fused = Fused(*parts)
    q, k, v = fused(torch.randn(1, 3, 48))
    (q.sum() + k.sum() + v.sum()).backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in parts)
