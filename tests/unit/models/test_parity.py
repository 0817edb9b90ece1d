"""Our Llama-family forward against transformers' reference, and the backend interface.

Parity (the issue): for the same weights, our logits equal transformers' eager forward
within 1e-4 in float32, for prefill and for token-by-token decoding. The tiny configs
use random weights large enough (std 0.15) that logits are O(1) and attention is far
from uniform, so a RoPE, mask, bias or GQA mistake moves the logits by much more than
the tolerance.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers

import models.backend
from models.backend import TorchBackend
from models.config import ModelConfig
from models.llama import LlamaModel
from models.loading import LoadedModel, random_state, tiny_config

VOCAB = 512
ATOL = 1e-4
STD = 0.15  # random weight scale: big enough for peaked attention and O(1) logits


def _variant(name: str) -> dict[str, Any]:
    """HF config dict of one tiny test architecture."""
    if name == "llama":
        return tiny_config(VOCAB)
    if name == "llama-bias-untied":
        # attention_bias gives q/k/v/o biases in Llama; mlp_bias the MLP's; untied LM head.
        return {**tiny_config(VOCAB), "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False}
    if name == "mistral":
        # Mistral with plain multi-head attention (no GQA) and an untied head.
        cfg = {**tiny_config(VOCAB, model_type="mistral"), "num_key_value_heads": 4}
        return {**cfg, "tie_word_embeddings": False, "sliding_window": None}
    if name == "mistral-window":
        # A sliding window far shorter than the test sequences, with GQA.
        return {**tiny_config(VOCAB, model_type="mistral"), "sliding_window": 5}
    if name == "qwen2":
        return tiny_config(VOCAB, model_type="qwen2")  # Qwen2: q/k/v biases always on
    ropes: dict[str, dict[str, Any]] = {
        "llama3-rope": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        # YaRN also scales attention (cos and sin by its attention factor, here 1.139).
        "yarn-rope": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        "linear-rope": {"rope_type": "linear", "factor": 2.0},
    }
    if name in ropes:
        cfg = {k: v for k, v in tiny_config(VOCAB).items() if k != "rope_theta"}
        return {**cfg, "rope_parameters": {**ropes[name], "rope_theta": 10000.0}}
    raise KeyError(name)


VARIANTS = ["llama", "llama-bias-untied", "mistral", "mistral-window", "qwen2", "llama3-rope", "yarn-rope", "linear-rope"]

HF_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
}


def _ours(cfg: dict[str, Any], seed: int = 0) -> LlamaModel:
    model = LlamaModel(ModelConfig.from_hf(cfg))
    random_state(model, seed=seed, std=STD)
    return model.eval()


def _hf(cfg: dict[str, Any], ours: LlamaModel) -> torch.nn.Module:
    """The transformers model of the same family, holding exactly our weights."""
    config_cls, model_cls = HF_CLASSES[cfg["model_type"]]
    hf = model_cls(config_cls(**cfg, attn_implementation="eager")).eval()
    hf.load_state_dict(ours.state_dict(), strict=True)
    return hf


def _ids(t: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, t), generator=torch.Generator().manual_seed(seed))


def _hf_logits(hf: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(input_ids=ids).logits.float()


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request: pytest.FixtureRequest) -> tuple[str, LlamaModel, torch.nn.Module]:
    """(variant name, our model, the HF model with the same weights)."""
    cfg = _variant(request.param)
    ours = _ours(cfg)
    return request.param, ours, _hf(cfg, ours)


def test_weights_are_meaningful(pair: tuple[str, LlamaModel, torch.nn.Module]) -> None:
    """The variants exercise what they claim: non-zero biases, untied heads, O(1) logits."""
    name, ours, hf = pair
    attn = ours.model.layers[0].self_attn
    if name in ("qwen2", "llama-bias-untied"):
        assert attn.q_proj.bias is not None and attn.q_proj.bias.abs().min() > 0
        assert attn.k_proj.bias.abs().sum() > 0 and attn.v_proj.bias.abs().sum() > 0
        assert (attn.o_proj.bias is not None) == (name == "llama-bias-untied")
        assert hf.model.layers[0].self_attn.q_proj.bias is not None
    else:
        assert attn.q_proj.bias is None
    tied = ours.lm_head.weight is ours.model.embed_tokens.weight
    assert tied == (name not in ("mistral", "llama-bias-untied"))
    assert _hf_logits(hf, _ids(16)).std() > 0.5  # logits far above the 1e-4 tolerance


def test_prefill_matches_transformers(pair: tuple[str, LlamaModel, torch.nn.Module]) -> None:
    """prefill(all_logits=True) equals HF logits at every position, for a batch of 2."""
    _, ours, hf = pair
    ids = _ids(24, seed=1, batch=2)
    backend = TorchBackend(ours)
    backend.reset(batch=2)
    got = backend.prefill(ids, all_logits=True)
    ref = _hf_logits(hf, ids)
    assert got.shape == ref.shape == (2, 24, VOCAB)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    # Without all_logits, the last position only.
    backend.reset(batch=2)
    torch.testing.assert_close(backend.prefill(ids), ref[:, -1:], atol=ATOL, rtol=0)


def test_step_by_step_matches_transformers(pair: tuple[str, LlamaModel, torch.nn.Module]) -> None:
    """A short prefill then one `step` per token equals HF's full-sequence logits."""
    _, ours, hf = pair
    ids = _ids(20, seed=2)
    ref = _hf_logits(hf, ids)
    backend = TorchBackend(ours)
    got = [backend.prefill(ids[:, :3], all_logits=True)]
    for t in range(3, ids.shape[1]):
        got.append(backend.step(ids[:, t : t + 1]))
        assert backend.length == t + 1
    torch.testing.assert_close(torch.cat(got, dim=1), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["llama3-rope", "yarn-rope", "linear-rope"])
def test_rope_scaling_changes_logits(name: str) -> None:
    """The scaled-RoPE variants are not vacuous: default RoPE on the same weights differs."""
    ids = _ids(40, seed=3)
    a = TorchBackend(_ours(_variant(name))).prefill(ids, all_logits=True)
    b = TorchBackend(_ours(tiny_config(VOCAB))).prefill(ids, all_logits=True)
    assert (a - b).abs().max() > 1e-3


# --- the real default model ------------------------------------------------------------

CODE = '''def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
'''


@pytest.fixture(scope="module")
def smol_pair(smol: LoadedModel) -> tuple[TorchBackend, torch.nn.Module, torch.Tensor]:
    """A fresh backend over the loaded SmolLM2 weights, HF's model from the same directory, ids."""
    hf = transformers.LlamaForCausalLM.from_pretrained(
        smol.info["dir"], dtype=torch.float32, attn_implementation="eager"
    ).eval()
    # A separate cache over the shared weights: the session's backend belongs to the engine.
    backend = TorchBackend(smol.backend.model)
    ids = torch.tensor([smol.tokenizer.encode(CODE)])
    return backend, hf, ids


@pytest.mark.model
def test_smollm2_prefill_matches_transformers(smol_pair: tuple[TorchBackend, torch.nn.Module, torch.Tensor]) -> None:
    """SmolLM2-135M: our prefill logits equal transformers' for a code snippet."""
    backend, hf, ids = smol_pair
    backend.reset()
    got = backend.prefill(ids, all_logits=True)
    ref = _hf_logits(hf, ids)
    assert got.shape == ref.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.model
def test_smollm2_steps_match_transformers(smol_pair: tuple[TorchBackend, torch.nn.Module, torch.Tensor]) -> None:
    """SmolLM2-135M: prefill part of the snippet, step the last 8 tokens one at a time."""
    backend, hf, ids = smol_pair
    backend.reset()
    n = ids.shape[1] - 8
    ref = _hf_logits(hf, ids)
    backend.prefill(ids[:, :n])
    got = torch.cat([backend.step(ids[:, t : t + 1]) for t in range(n, ids.shape[1])], dim=1)
    torch.testing.assert_close(got, ref[:, n:], atol=ATOL, rtol=0)
    # The snippet's tokens are predictable: the model is really the trained one.
    assert (ref[0, :-1].argmax(-1) == ids[0, 1:]).float().mean() > 0.4


# --- backend interface properties on a tiny model ----------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> LlamaModel:
    return _ours(tiny_config(VOCAB, layers=4), seed=7)


def _prefilled(model: LlamaModel, ids: torch.Tensor) -> TorchBackend:
    backend = TorchBackend(model)
    backend.prefill(ids)
    return backend


def test_run_layers_in_two_segments_equals_step(tiny_model: LlamaModel) -> None:
    """embed, run_layers(0,k), run_layers(k,L), exit_logits(L) is exactly `step`."""
    prompt, nxt = _ids(10, seed=4), torch.tensor([[5]])
    ref = _prefilled(tiny_model, prompt).step(nxt)
    for k in (1, 2, 3):
        backend = _prefilled(tiny_model, prompt)
        h = backend.run_layers(backend.embed(nxt), 0, k)
        assert backend.layer_lengths() == [11] * k + [10] * (4 - k)
        h = backend.run_layers(h, k, 4)
        torch.testing.assert_close(backend.exit_logits(h, 4), ref, atol=1e-6, rtol=0)
        assert backend.layer_lengths() == [11] * 4


def test_step_refuses_layers_of_unequal_length(tiny_model: LlamaModel) -> None:
    """After only the first layers ran, a full step raises instead of misplacing positions."""
    backend = _prefilled(tiny_model, _ids(6))
    backend.run_layers(backend.embed(torch.tensor([[1]])), 0, 2)
    with pytest.raises(RuntimeError, match="layer 2"):
        backend.step(torch.tensor([[2]]))


def test_step_with_embeds_equals_step_with_ids(tiny_model: LlamaModel) -> None:
    """`step(embeds=embed(ids))` is `step(ids)` (the superposition input path)."""
    prompt, nxt = _ids(8, seed=5), torch.tensor([[9, 17]])
    a = _prefilled(tiny_model, prompt)
    b = _prefilled(tiny_model, prompt)
    assert b.embed(nxt).shape == (1, 2, 64)
    torch.testing.assert_close(a.step(embeds=b.embed(nxt)), b.step(nxt), atol=0, rtol=0)


def test_truncate_then_restep_gives_same_logits(tiny_model: LlamaModel) -> None:
    """Rolling back n positions and stepping the same tokens reproduces the logits."""
    ids = _ids(12, seed=6)
    backend = _prefilled(tiny_model, ids[:, :8])
    first = torch.cat([backend.step(ids[:, t : t + 1]) for t in range(8, 12)], dim=1)
    backend.truncate(9)
    assert backend.length == 9 and backend.layer_lengths() == [9] * 4
    again = torch.cat([backend.step(ids[:, t : t + 1]) for t in range(9, 12)], dim=1)
    torch.testing.assert_close(again, first[:, 1:], atol=1e-6, rtol=0)
    # Stepping other tokens after the rollback changes the logits (the rollback is real).
    backend.truncate(9)
    other = backend.step(torch.tensor([[int(ids[0, 9]) + 1]]))
    assert (other - first[:, 1:2]).abs().max() > 1e-3


def test_select_fans_out_one_prompt(tiny_model: LlamaModel) -> None:
    """select([0, 0]) after a B=1 prefill, then two different tokens, equals two B=1 runs."""
    prompt = _ids(9, seed=8)
    backend = _prefilled(tiny_model, prompt)
    backend.select(torch.tensor([0, 0]))
    assert backend.batch == 2
    both = backend.step(torch.tensor([[3], [4]]))
    assert both.shape == (2, 1, VOCAB)
    for row, tok in enumerate((3, 4)):
        alone = _prefilled(tiny_model, prompt).step(torch.tensor([[tok]]))
        torch.testing.assert_close(both[row : row + 1], alone, atol=1e-5, rtol=0)
    assert (both[0] - both[1]).abs().max() > 1e-3


def test_chunked_prefill_equals_unchunked(tiny_model: LlamaModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt longer than PREFILL_CHUNK gives the same logits in chunks as in one pass."""
    ids = _ids(21, seed=9)
    whole = TorchBackend(tiny_model).prefill(ids, all_logits=True)
    monkeypatch.setattr(models.backend, "PREFILL_CHUNK", 8)
    chunked = TorchBackend(tiny_model)
    got = chunked.prefill(ids, all_logits=True)
    assert got.shape == (1, 21, VOCAB) and chunked.length == 21
    # Chunks of 8 rows take the few-row matmul path, the whole prompt the usual one: the
    # summation order differs, so allow float32 rounding (a real mistake moves logits by >1e-2).
    torch.testing.assert_close(got, whole, atol=1e-4, rtol=0)
    torch.testing.assert_close(TorchBackend(tiny_model).prefill(ids), whole[:, -1:], atol=1e-4, rtol=0)


def test_prefill_rejects_empty_input(tiny_model: LlamaModel) -> None:
    """An empty prompt is an error, not an undefined `h`."""
    with pytest.raises(ValueError):
        TorchBackend(tiny_model).prefill(torch.zeros((1, 0), dtype=torch.long))


def test_fill_kv_gives_skipped_layers_a_position(tiny_model: LlamaModel) -> None:
    """State copying: after an exit at layer k, fill_kv(k, L) evens the layers out.

    The next step then runs, and it attends to the filled position: its logits differ from
    a run where that position never existed. Layer k's filled K/V are exactly what running
    layer k on the exited state would store (same input, RoPE at the same position).
    """
    prompt, x, y, k = _ids(7, seed=10), torch.tensor([[11]]), torch.tensor([[12]]), 2
    backend = _prefilled(tiny_model, prompt)
    h = backend.run_layers(backend.embed(x), 0, k)
    backend.fill_kv(h, k, 4)
    assert backend.layer_lengths() == [8] * 4
    filled = backend.step(y)
    assert backend.layer_lengths() == [9] * 4

    # Reference for layer k's K/V at position 7: run layer k on the same exited state.
    ref = _prefilled(tiny_model, prompt)
    ref.run_layers(ref.embed(x), 0, k)
    ref.run_layers(h, k, k + 1)
    torch.testing.assert_close(backend.cache.k[k][:, :, 7], ref.cache.k[k][:, :, 7], atol=1e-6, rtol=0)
    torch.testing.assert_close(backend.cache.v[k][:, :, 7], ref.cache.v[k][:, :, 7], atol=1e-6, rtol=0)

    without = _prefilled(tiny_model, prompt).step(y)
    assert (filled - without).abs().max() > 1e-3
    # Same positions, but the filled K/V come from another token's state: other logits.
    other = _prefilled(tiny_model, prompt)
    h2 = other.run_layers(other.embed(torch.tensor([[13]])), 0, k)
    other.fill_kv(h2, k, 4)
    assert (other.step(y) - filled).abs().max() > 1e-3


def test_sliding_window_with_chunked_prefill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefill chunks that straddle the window, then steps, still equal HF's windowed logits."""
    import models.backend

    cfg = _variant("mistral-window")
    ours = _ours(cfg)
    ref = _hf_logits(_hf(cfg, ours), _ids(30, seed=4))
    monkeypatch.setattr(models.backend, "PREFILL_CHUNK", 7)
    backend = TorchBackend(ours)
    got = [backend.prefill(_ids(30, seed=4)[:, :22], all_logits=True)]
    got += [backend.step(_ids(30, seed=4)[:, t : t + 1]) for t in range(22, 30)]
    torch.testing.assert_close(torch.cat(got, dim=1), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 16, 17, 40])
@pytest.mark.parametrize("bias", [False, True])
def test_small_row_linear_equals_f_linear(rows: int, bias: bool) -> None:
    """The `W @ x^T` path for few rows (and the usual one past SMALL_M) computes x @ W^T + b."""
    from models.llama import linear

    g = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 48, generator=g)
    b = torch.randn(96, generator=g) if bias else None
    x = torch.randn(1, rows, 48, generator=g)
    y = linear(x, w, b)
    assert y.shape == (1, rows, 96) and y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)
    # A one-row input is padded internally; the answer must be that row's alone.
    torch.testing.assert_close(linear(x[:, :1], w, b), y[:, :1], rtol=1e-5, atol=1e-5)
