"""The torch backend on a CUDA GPU against the CPU: logits, drafts, speculation (skipped without a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from decoding.engine import CompletionRequest, Engine
from decoding.settings import Settings
from models.backend import TorchBackend
from models.loading import LoadedModel, load_model
from tests.unit.decoding.helpers import headed_tiny
from tests.unit.models.helpers import CODE, prompt_drafts

pytestmark = pytest.mark.gpu

@pytest.fixture(autouse=True)
def _gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


def _drafts(loaded: LoadedModel, wire: dict[str, object]) -> list[list[list[int]]]:
    return prompt_drafts(loaded, Settings.from_dict({"maxNewTokens": 12, "mode": "block", "timeBudgetMs": 600_000,
                                                     **wire})[0])


def _on_cuda(loaded: LoadedModel) -> LoadedModel:
    """The same weights (and exit heads) in a backend on the GPU; copies, since `.to` moves a
    module in place and the CPU model must stay where it is."""
    cpu = loaded.backend
    assert isinstance(cpu, TorchBackend)
    gpu = TorchBackend(copy.deepcopy(cpu.model), "cuda")
    if cpu.exit_heads:
        gpu.attach_heads(copy.deepcopy(cpu.exit_heads), cpu.shortlist, cpu.exit_thresholds)
    return LoadedModel(loaded.spec, gpu, loaded.tokenizer, loaded.fim, 0.0, loaded.source)


def test_tiny_logits_and_drafts_match_the_cpu() -> None:
    cpu, gpu = load_model("tiny"), load_model("tiny", device="cuda")
    assert gpu.backend.device.type == "cuda"
    ids = torch.tensor([cpu.tokenizer.encode(CODE * 40)[:600]])
    a = cpu.backend.prefill(ids, all_logits=True)
    b = gpu.backend.prefill(ids, all_logits=True)
    assert b.device.type == "cuda" and (a - b.cpu()).abs().max().item() < 1e-3
    for t in (11, 500, 3):
        a, b = cpu.backend.step(torch.tensor([[t]])), gpu.backend.step(torch.tensor([[t]]))
        assert (a - b.cpu()).abs().max().item() < 1e-3
    for wire in ({"drafts": 3}, {"drafts": 3, "decoder": "superposed", "mode": "line"}):
        got = _drafts(cpu, wire), _drafts(gpu, wire)
        assert got[0] == got[1] and all(len(d) == 3 for d in got[1])


def test_speculation_on_the_gpu_gives_plain_greedy_and_early_exit_the_cpu_tokens() -> None:
    cpu = headed_tiny(3, shortlist_every=3, thresholds={1: 0.02, 2: 0.02})
    gpu = _on_cuda(cpu)
    assert _drafts(gpu, {"drafts": 1, "earlyExit": True}) == _drafts(cpu, {"drafts": 1, "earlyExit": True})
    spec = _drafts(gpu, {"drafts": 1, "speculative": True})
    assert spec == _drafts(gpu, {"drafts": 1})
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 12, "mode": "block", "speculative": True})[0]
    r = Engine(gpu).complete(CompletionRequest(CODE, len(CODE), settings=s))
    assert r.timings["spec_accepted"] > 0


@pytest.mark.model
def test_default_model_drafts_on_the_gpu_are_the_cpu_drafts(smol: LoadedModel) -> None:
    gpu = _on_cuda(smol)
    assert _drafts(gpu, {"drafts": 3}) == _drafts(smol, {"drafts": 3})
    # Speculation with the shipped exit heads stays lossless on the GPU.
    assert _drafts(gpu, {"drafts": 1, "speculative": True}) == _drafts(gpu, {"drafts": 1})


def test_steps_replay_as_cuda_graphs_with_the_eager_logits() -> None:
    """Decoding steps, drafts side by side and speculation replay as CUDA graphs (one capture
    per cache buffers, batch and token count), with what eager steps on the GPU give."""
    cpu = headed_tiny(3, shortlist_every=3, thresholds={1: 0.02, 2: 0.02})
    graphs, eager = _on_cuda(cpu), _on_cuda(cpu)
    g, e = graphs.backend, eager.backend
    assert isinstance(g, TorchBackend) and isinstance(e, TorchBackend) and g.cuda_graphs
    e.cuda_graphs = False
    ids = torch.tensor([cpu.tokenizer.encode(CODE * 40)[:273]])
    g.prefill(ids[:, :250])
    e.prefill(ids[:, :250])
    for i in range(250, 270):  # across the buffers' first growth, at 256
        a, b = g.step(ids[:, i : i + 1]), e.step(ids[:, i : i + 1])
        assert (a - b).abs().max().item() < 1e-4
    a, b = g.step(ids[:, 270:273]), e.step(ids[:, 270:273])  # three tokens, as a verify pass
    assert (a - b).abs().max().item() < 1e-4
    assert g.replays == 21 and g.length == 273 and g.cache.capacity >= 273
    for wire in ({"drafts": 1}, {"drafts": 3}, {"drafts": 1, "speculative": True}):
        before = g.replays
        assert _drafts(graphs, wire) == _drafts(eager, wire), wire
        assert g.replays > before, wire
    assert g.cuda_graphs and e.replays == 0
