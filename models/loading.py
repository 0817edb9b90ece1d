"""Load a model spec into a backend and tokenizer, caching dequantized GGUF weights."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.backend import Backend, TorchBackend
from models.config import ModelConfig, UnsupportedModelError, default_exit_layers
from models.exit_heads import ExitHeads, shipped_heads
from models.fim import FimTemplate, detect_fim
from models.llama import LlamaModel
from models.registry import DEFAULT_MODEL, ModelNotFoundError, ModelSpec, resolve, wheel_file, WHEEL_MODELS
from models.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bump when the layout of a cached model directory changes."""
MODEL_ENTRIES = 3  # dequantized GGUF models kept in the cache (about 0.5 GB each for the default)
ONNX_ENTRIES = 4  # ONNX exports kept (a model, quantization and ONNX Runtime version each)


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/draftls` (default `~/.cache/draftls`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "draftls"


@dataclass
class LoadedModel:
    """A ready model: backend, tokenizer, FIM template and how it was loaded."""

    spec: ModelSpec
    backend: Backend
    tokenizer: Tokenizer
    fim: FimTemplate | None
    load_seconds: float
    source: str  # "cache", "gguf", "hf-dir", "hub" or "tiny"
    info: dict[str, object] = field(default_factory=dict)

    @property
    def quantize(self) -> str:
        """The weights the backend runs: "none" (float32, as torch always runs), "int8" or "int4"."""
        return str(self.info.get("quantize", "none"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gguf_cache_dir(gguf: Path) -> Path:
    """The cache entry of a GGUF file, keyed by its content: the same model installed in two
    environments (or reinstalled) shares one entry instead of adding another 0.5 GB."""
    key = hashlib.sha256(f"{CACHE_FORMAT}:{sha256_file(gguf)}".encode()).hexdigest()
    return cache_root() / "models" / f"{gguf.stem}-{key[:16]}"


def _cache_valid(d: Path) -> bool:
    """A cached directory is good when its manifest exists and the weights' size and SHA-256
    match it (a corrupt or half-written file is detected here and rebuilt; ~0.3 s for 0.5 GB)."""
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        weights = d / "model.safetensors"
        if weights.stat().st_size != manifest["size"]:
            return False
        if sha256_file(weights) != manifest["sha256"]:
            log.warning("the cached weights in %s fail their checksum; rebuilding them", d)
            return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def prune(folder: Path, keep: int, current: Path) -> None:
    """Remove all but the `keep` most recently used entries of a cache folder (`current` is
    marked used now and always kept): caches on disk have a limit too."""
    try:
        os.utime(current)
        entries = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in [p for p in entries if p != current][max(0, keep - 1):]:
        log.info("removing the cache entry %s (more than %d kept)", old, keep)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _gguf_read_once() -> Iterator[None]:
    """While transformers dequantizes a GGUF file: it parses the file's header anew for the
    config, the tokenizer and the weights (its 49,152-token vocabulary field by field), and
    builds gguf's tensor-name table anew for every module of the model. Both are pure
    reads of the same inputs, so they are memoized here (BENCHMARKS.md: the first run's load)."""
    import gguf as gguf_lib

    reader, name_map = gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map
    readers: dict[tuple[str, str], object] = {}

    def read(path: object, mode: str = "r") -> object:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = read, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = reader, name_map


def dequantize_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF file through transformers into an HF-style directory at `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s (once; cached in %s)", gguf.name, out)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        with _gguf_read_once():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tok.save_pretrained(str(tmp))
        cfg = hf.config.to_dict()
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        state = {k: v.contiguous() for k, v in hf.state_dict().items()}
        if cfg.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)  # safetensors refuses shared tensors
        save_file(state, str(tmp / "model.safetensors"))
        size = (tmp / "model.safetensors").stat().st_size
        (tmp / "manifest.json").write_text(
            json.dumps({"source": str(gguf), "size": size, "sha256": sha256_file(tmp / "model.safetensors")})
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)  # atomic: a crash mid-way leaves no half-written cache entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_gguf_cache(gguf: Path) -> tuple[Path, bool]:
    """HF-style directory for a GGUF file, dequantizing on first use; (dir, was_cached)."""
    d = _gguf_cache_dir(gguf)
    if _cache_valid(d):
        prune(d.parent, MODEL_ENTRIES, d)
        return d, True
    d.parent.mkdir(parents=True, exist_ok=True)
    dequantize_gguf(gguf, d)
    prune(d.parent, MODEL_ENTRIES, d)
    return d, False


def _read_state(d: Path) -> dict[str, torch.Tensor]:
    index = d / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in d.glob("*.safetensors"))
    if not files:
        bins = [p.name for p in d.glob("*.bin")] + [p.name for p in d.glob("*.pt")]
        why = f" (found {', '.join(bins)}: pickle files are never loaded, convert them to safetensors)" if bins else ""
        raise ModelNotFoundError(f"no .safetensors weights in {d}{why}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(d / f)))
    return state


def _tokenizer_for(d: Path, cfg: ModelConfig) -> Tokenizer:
    if not (d / "tokenizer.json").exists():
        # Only a slow tokenizer: convert it once with transformers and keep the fast one.
        from transformers import AutoTokenizer

        tok_dir = cache_root() / "tokenizers" / hashlib.sha256(str(d.resolve()).encode()).hexdigest()[:16]
        if not (tok_dir / "tokenizer.json").exists():
            AutoTokenizer.from_pretrained(str(d)).save_pretrained(str(tok_dir))
        d = tok_dir
    return Tokenizer.from_dir(d, set(cfg.eos_token_ids))


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype) -> LlamaModel:
    """Our LlamaModel with `state` loaded strictly (missing or extra weights are errors)."""
    with torch.device("meta"):
        model = LlamaModel(cfg)
    model = model.to_empty(device="cpu")
    inv_freq, _ = cfg.inv_freq()
    model.inv_freq = inv_freq
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if missing or unexpected:
        raise UnsupportedModelError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(dtype)


def tiny_config(vocab_size: int, layers: int = 4, model_type: str = "llama") -> dict[str, object]:
    """HF config dict of the tiny random model used by tests."""
    return {
        "model_type": model_type, "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096,
        "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False,
    }


def random_state(model: LlamaModel, seed: int, std: float = 0.02) -> None:
    """Seeded random weights (norm weights near 1), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def default_tokenizer() -> Tokenizer:
    """The default model's tokenizer (dequantizes the default model once if needed)."""
    d, _ = ensure_gguf_cache(wheel_file(*WHEEL_MODELS[DEFAULT_MODEL]))
    return Tokenizer.from_dir(d)


def resolve_device(device: str) -> str:
    """`auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without a GPU falls back with a log line."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        log.warning("device cuda requested but torch sees no GPU; using the CPU")
    return "cpu"


def resolve_backend(backend: str, device: str = "cpu", quantize: str = "none") -> str:
    """The backend that `auto` means here (BENCHMARKS.md, issue 8): on a CUDA GPU that torch
    sees, torch, whose steps replay as CUDA graphs (4x faster there than ONNX Runtime's CUDA
    provider), unless quantized weights are asked for; elsewhere ONNX Runtime where it is
    installed (faster than torch on the CPUs measured); else torch."""
    if backend != "auto":
        return backend
    if quantize in ("none", "auto") and device in ("auto", "cuda") and torch.cuda.is_available():
        return "torch"
    from models import onnx_backend

    return "onnx" if onnx_backend.available() else "torch"


def load_model(name: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
               backend: str = "torch", quantize: str = "none",
               progress: Callable[[str], None] = lambda s: None) -> LoadedModel:
    """Load a model by name, path or hub id (device: cpu, cuda or auto) into the torch backend,
    or with backend "onnx" into ONNX Runtime (exported on first use, then cached; without
    onnxruntime installed, torch with a log line), or "auto" (`resolve_backend`)."""
    resolved = resolve_backend(backend, device, quantize)
    if backend == "auto" and resolved == "torch" and resolve_device(device) == "cuda":
        log.info("backend auto: torch on the GPU, its decoding steps replayed as CUDA graphs")
    elif backend == "auto" and resolved == "torch":
        log.info("backend auto: onnxruntime is not installed, so torch runs the model "
                 "(pip install 'draftls[onnx]' for the faster ONNX Runtime)")
    backend = resolved
    loaded = _load_torch(name, device if backend == "torch" else "cpu", dtype)
    if backend == "onnx":
        from models import onnx_backend

        if not onnx_backend.available():
            log.warning("backend onnx asked for, but onnxruntime is not installed: using torch "
                        "(pip install 'draftls[onnx]', or [gpu] for CUDA)")
            return loaded
        try:
            loaded = to_onnx(loaded, device, quantize, progress)
        except Exception as e:  # noqa: BLE001 - an export or runtime that fails costs the speed, not the model
            log.warning("backend onnx failed (%s: %s): using torch", type(e).__name__, e)
    return loaded


def model_key(loaded: LoadedModel) -> str:
    """A name for a model's weights, for caches derived from them (changes when the files do)."""
    h = hashlib.sha256(loaded.spec.name.encode())
    d = loaded.info.get("dir")
    if d:
        for f in sorted(Path(str(d)).glob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in loaded.spec.name)[-48:]
    return f"{safe}-{h.hexdigest()[:12]}"


def onnx_cuts(loaded: LoadedModel) -> list[int]:
    """Where an ONNX export cuts the layers into segments: at the exit heads' layers (without
    heads, where self-speculation then drafts)."""
    backend = loaded.backend
    assert isinstance(backend, TorchBackend)
    return sorted(backend.exit_heads) or default_exit_layers(backend.config.num_layers)


def to_onnx(loaded: LoadedModel, device: str = "auto", quantize: str = "none",
            progress: Callable[[str], None] = lambda s: None, bind: bool | None = None,
            attention: str | None = None) -> LoadedModel:
    """The same model on ONNX Runtime (`quantize` auto: `quantize_for`): exported once per
    model, quantization, attention (by default the device's) and ORT version (a few seconds;
    `draftls export-onnx` does it ahead of time), then loaded from the cache."""
    from models.onnx_backend import OnnxBackend, attention_for, quantize_for
    from models.onnx_export import export, export_dir, is_complete

    t0 = time.perf_counter()
    if quantize == "auto":
        quantize = quantize_for(quantize, device)
        log.info("quantize auto: %s", "int8 (this CPU has AVX-512 VNNI)" if quantize == "int8" else "float32")
    assert isinstance(loaded.backend, TorchBackend)
    model = loaded.backend.model
    torch_backend = loaded.backend
    cuts = onnx_cuts(loaded)
    attention = attention or attention_for(device)
    d = export_dir(cache_root(), model_key(loaded), quantize, attention)
    if not is_complete(d, cuts, model.cfg.num_layers, attention):
        progress(f"exporting {loaded.spec.name} to ONNX ({quantize})")
        export(model, d, quantize, cuts, progress, attention)
    prune(d.parent, ONNX_ENTRIES, d)
    weight = lambda p: p.detach().float().numpy()  # noqa: E731
    backend = OnnxBackend(d, model.cfg, weight(model.model.embed_tokens.weight), weight(model.lm_head.weight),
                          weight(model.model.norm.weight), device, bind=bind)
    if torch_backend.exit_heads:
        backend.attach_heads(torch_backend.exit_heads, torch_backend.shortlist, torch_backend.exit_thresholds)
    info = {**loaded.info, "onnx_dir": str(d), "quantize": quantize, "providers": backend.providers}
    return LoadedModel(loaded.spec, backend, loaded.tokenizer, loaded.fim,
                       loaded.load_seconds + time.perf_counter() - t0, loaded.source, info)


def _load_torch(name: str | None, device: str, dtype: torch.dtype) -> LoadedModel:
    t0 = time.perf_counter()
    device = resolve_device(device)
    spec = resolve(name)
    if spec.kind == "tiny":
        tok = default_tokenizer()
        cfg = ModelConfig.from_hf(tiny_config(tok.vocab_size))
        model = LlamaModel(cfg)
        random_state(model, seed=0)
        backend = TorchBackend(model.to(dtype), device)
        return LoadedModel(spec, backend, tok, None, time.perf_counter() - t0, "tiny")
    if spec.kind == "gguf":
        d, cached = ensure_gguf_cache(Path(spec.location))
        source = "cache" if cached else "gguf"
    elif spec.kind == "hub":
        d, source = _download(spec.location), "hub"
    else:
        d, source = Path(spec.location), "hf-dir"
    cfg = ModelConfig.from_hf(json.loads((d / "config.json").read_text()))
    model = build_model(cfg, _read_state(d), dtype)
    tok = _tokenizer_for(d, cfg)
    backend = TorchBackend(model, device)
    info = {"params": cfg.num_params, "layers": cfg.num_layers, "dir": str(d)}
    if spec.name in WHEEL_MODELS:
        info["exit_heads"] = attach_shipped_heads(spec.name, backend)
    return LoadedModel(spec, backend, tok, detect_fim(tok), time.perf_counter() - t0, source, info)


def attach_shipped_heads(model_id: str, backend: TorchBackend) -> list[int]:
    """Give the backend the exit heads shipped for `model_id`; the layers they sit at ([] if none)."""
    path = shipped_heads(model_id)
    if path is None:
        log.info("no exit heads shipped for %s: early exit and speculation use the plain shared head", model_id)
        return []
    try:
        heads = ExitHeads.load(path, backend.config.hidden_size, backend.dtype)
        if max(heads.layers, default=0) >= backend.config.num_layers:
            raise ValueError(f"heads for layers {heads.layers} but the model has {backend.config.num_layers}")
    except Exception as e:  # a bad heads file costs the speed-up, never the model
        log.warning("exit heads %s not usable (%s): using the plain shared head", path, e)
        return []
    backend.attach_heads(heads.adapters, heads.shortlist, heads.thresholds)
    return heads.layers


def _download(repo: str) -> Path:
    """Fetch a hub checkpoint (safetensors, config and tokenizer files only)."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model"])
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear message
        raise ModelNotFoundError(
            f"could not fetch {repo!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
            "with no network, download it elsewhere and pass the local directory instead"
        ) from e
    return Path(path)
