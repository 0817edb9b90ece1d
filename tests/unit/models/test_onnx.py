"""The ONNX Runtime backend against the torch backend: logits, cache handling, greedy drafts."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from decoding.engine import CompletionRequest, Engine  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from decoding.speculative import SpecConfig  # noqa: E402
from models import onnx_backend  # noqa: E402
from models.loading import LoadedModel, load_model  # noqa: E402
from models.onnx_backend import OnnxBackend  # noqa: E402
from models.config import default_exit_layers  # noqa: E402
from models.onnx_export import export  # noqa: E402
from tests.unit.decoding.helpers import headed_tiny  # noqa: E402
from tests.unit.models.helpers import CODE, PROMPTS, prompt_drafts as _drafts  # noqa: E402



def _onnx(loaded: LoadedModel, folder: Path, quantize: str = "none", device: str = "cpu",
          bind: bool | None = None, attention: str | None = None) -> OnnxBackend:
    """The loaded torch model exported to folder, cut at its exit heads and speculation's layers,
    with the attention the device's graphs get unless one is given."""
    tb = loaded.backend
    model = tb.model  # type: ignore[attr-defined]
    cuts = sorted(tb.exit_heads) or default_exit_layers(model.cfg.num_layers)  # type: ignore[attr-defined]
    if not (folder / "export.json").is_file():
        export(model, folder, quantize, cuts, attention=attention or onnx_backend.attention_for(device))
    w = lambda p: p.detach().cpu().numpy()  # noqa: E731
    ob = OnnxBackend(folder, model.cfg, w(model.model.embed_tokens.weight), w(model.lm_head.weight),
                     w(model.model.norm.weight), device, bind=bind)
    if tb.exit_heads:  # type: ignore[attr-defined]
        ob.attach_heads(tb.exit_heads, tb.shortlist, tb.exit_thresholds)  # type: ignore[attr-defined]
    return ob


@pytest.fixture(scope="module", params=[("gqa", None), ("plain", False), ("plain", True)],
                ids=["gqa", "plain-host-feed", "plain-io-binding"])
def tiny_pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[LoadedModel, OnnxBackend]:
    """The tiny model and its export: with GroupQueryAttention writing into the bound cache (the
    CPU's graphs), and with plain attention (CUDA's), fed plainly and through I/O binding of
    the cache buffers in place, here on host memory."""
    attention, bind = request.param
    tiny = load_model("tiny")
    ob = _onnx(tiny, tmp_path_factory.mktemp("onnx") / "tiny", bind=bind, attention=attention)
    assert ob.gqa is (attention == "gqa") and ob.bound is (bind is not False)
    return tiny, ob


def _check_parity(tb: object, ob: OnnxBackend, ids: list[int], atol: float) -> None:
    tb.reset()  # type: ignore[attr-defined]
    ob.reset()
    a = tb.prefill(torch.tensor([ids]), all_logits=True)  # type: ignore[attr-defined]
    b = ob.prefill(torch.tensor([ids]), all_logits=True)
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < atol
    for t in (11, 500, 3):
        a, b = tb.step(torch.tensor([[t]])), ob.step(torch.tensor([[t]]))  # type: ignore[attr-defined]
        assert (a - b).abs().max().item() < atol
    assert ob.length == tb.length == len(ids) + 3  # type: ignore[attr-defined]


def test_prefill_and_steps_match_torch(tiny_pair: tuple[LoadedModel, OnnxBackend]) -> None:
    tiny, ob = tiny_pair
    _check_ir_version(Path(ob.folder))
    # 600 tokens: several prefill chunks and two capacity doublings of the cache buffers.
    ids = tiny.tokenizer.encode(CODE * 40)[:600]
    assert len(ids) == 600
    _check_parity(tiny.backend, ob, ids, 1e-4)
    assert ob.capacity >= 603


def test_truncate_embeds_and_tree_steps_match_torch(tiny_pair: tuple[LoadedModel, OnnxBackend]) -> None:
    tiny, ob = tiny_pair
    tb = tiny.backend
    ids = tiny.tokenizer.encode(CODE)
    for b in (tb, ob):
        b.reset()
        b.prefill(torch.tensor([ids]))
        b.step(torch.tensor([[7]]))
        b.truncate(len(ids))  # rolled back: the next step overwrites position len(ids)
    assert ob.length == len(ids)
    e = tb.embed(torch.tensor([[5, 9]]))
    mix = (e * torch.tensor([[[0.7], [0.3]]])).sum(1, keepdim=True)
    a, b = tb.step(embeds=mix), ob.step(embeds=mix)
    assert (a - b).abs().max().item() < 1e-4
    n = tb.length
    vis = torch.zeros(3, n + 3, dtype=torch.bool)
    vis[:, :n] = True
    vis[0, n], vis[1, n + 1], vis[2, [n, n + 2]] = True, True, True
    vis[1, 3] = False  # a cached position hidden from one token (drafts side by side hide each other's)
    pos = torch.tensor([n, n, n + 1])
    a = tb.step_tree(torch.tensor([[4, 8, 15]]), pos, vis)
    b = ob.step_tree(torch.tensor([[4, 8, 15]]), pos, vis)
    assert (a - b).abs().max().item() < 1e-4


def test_one_graph_runs_all_layers_until_part_of_them_is_needed(tiny_pair: tuple[LoadedModel, OnnxBackend]) -> None:
    """Plain decoding runs the chained graph of all layers, which reads the segments' weight
    files and also gives the residual stream at the segments' ends (speculation's probes);
    the first pass over part of the layers (early exit, speculation) loads the segments in its
    place, and the logits and states stay the same."""
    tiny, ob = tiny_pair
    folder = Path(ob.folder)
    n = tiny.backend.config.num_layers
    whole = (0, n)
    assert not (folder / f"layers_0_{n}.onnx.data").exists()  # no second copy of the weights
    assert (folder / f"layers_0_{n}.onnx").stat().st_size < (folder / "layers_2_4.onnx.data").stat().st_size
    fresh = _onnx(tiny, folder, bind=None if ob.gqa else ob.bound)
    assert len(fresh.segments) == 3 and list(fresh.layers) == [whole] and not fresh.kv
    ids = tiny.tokenizer.encode(CODE)
    fresh.reset()
    a = fresh.prefill(torch.tensor([ids]), all_logits=True)
    step = fresh.step(torch.tensor([[11]]))
    ends = [b for _, b in fresh.segments[:-1]]
    fresh.truncate(len(ids))
    logits, states = fresh.step_states(torch.tensor([[11, 12]]), ends)
    assert (logits[:, :1] - step).abs().max().item() < 1e-5
    tb = tiny.backend
    tb.reset()
    tb.prefill(torch.tensor([ids]))
    want_logits, want = tb.step_states(torch.tensor([[11, 12]]), ends)
    assert sorted(states) == ends and (logits - want_logits).abs().max().item() < 1e-4
    assert all(states[e].shape == want[e].shape and (states[e] - want[e]).abs().max().item() < 1e-4 for e in ends)
    assert list(fresh.layers) == [whole]
    fresh.reset()
    cut = fresh.segments[0][1]
    h = fresh.run_layers(fresh.embed(torch.tensor([ids])), 0, cut)
    assert set(fresh.layers) == set(fresh.segments)  # the whole graph is gone: weights are held once
    b = fresh.exit_logits(fresh.run_layers(h, cut, n), n)
    assert (a - b).abs().max().item() < 1e-5
    assert (fresh.step(torch.tensor([[11]])) - step).abs().max().item() < 1e-5
    fresh.truncate(len(ids))
    seg_logits, seg_states = fresh.step_states(torch.tensor([[11, 12]]), ends)
    assert (seg_logits - logits).abs().max().item() < 1e-5
    assert all((seg_states[e] - states[e]).abs().max().item() < 1e-5 for e in ends)
    fresh.fill_kv(h[:, -1:], cut, n)  # state copying loads its graphs when first used
    assert set(fresh.kv) == {s for s in fresh.segments if s[0] >= cut}
    fresh.prepare_full()  # speculation stopped drafting: the one graph again, the segments dropped
    assert list(fresh.layers) == [whole]
    fresh.truncate(len(ids))
    assert (fresh.step(torch.tensor([[11]])) - step).abs().max().item() < 1e-5


def test_gqa_graphs_refuse_an_unbound_cache(tiny_pair: tuple[LoadedModel, OnnxBackend]) -> None:
    """GroupQueryAttention writes the new K/V into its past buffers: fed as copies, they would be lost."""
    tiny, ob = tiny_pair
    if not ob.gqa:
        pytest.skip("plain attention graphs")
    with pytest.raises(ValueError, match="bound"):
        _onnx(tiny, Path(ob.folder), bind=False)


def test_engine_drafts_are_the_same_on_both_backends(tiny_pair: tuple[LoadedModel, OnnxBackend]) -> None:
    tiny, ob = tiny_pair
    onnx_loaded = LoadedModel(tiny.spec, ob, tiny.tokenizer, tiny.fim, 0.0, "tiny")
    s = Settings.from_dict({"drafts": 3, "maxNewTokens": 10, "mode": "block", "timeBudgetMs": 600_000})[0]
    got = _drafts(tiny, s)
    assert _drafts(onnx_loaded, s) == got and all(len(d) == 3 for d in got)
    sup = Settings.from_dict({**s.to_wire(), "decoder": "superposed", "mode": "line"})[0]
    runs = [Engine(x).complete(CompletionRequest(text, len(text), settings=sup)) for x in (tiny, onnx_loaded)
            for text in PROMPTS]
    assert [d.token_ids for r in runs[:4] for d in r.drafts] == [d.token_ids for r in runs[4:] for d in r.drafts]
    assert sum(r.timings["generated_tokens"] for r in runs[4:]) > 0


@pytest.mark.parametrize("feature", ["speculative", "earlyExit"])
def test_speculation_and_early_exit_give_the_torch_drafts_on_onnx(tmp_path: Path, feature: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Same exit heads and thresholds: speculation (lossless) and early exit (not lossless,
    but deterministic) give the same tokens on both backends, through the export's segments.
    Speculation drafts with the exit heads here whatever its probes measure."""
    from decoding import engine as engine_module

    made = engine_module.default_config
    monkeypatch.setattr(engine_module, "default_config", lambda b: dataclasses.replace(made(b), max_draft=3))
    monkeypatch.setattr(SpecConfig, "adapt", lambda self, n_layers: None)
    loaded = headed_tiny(3, shortlist_every=3, thresholds={1: 0.02, 2: 0.02})
    ob = _onnx(loaded, tmp_path / "headed")
    assert sorted(ob.exit_heads) == [1, 2] and ob.segments == [(0, 1), (1, 2), (2, 4)]
    other = LoadedModel(loaded.spec, ob, loaded.tokenizer, loaded.fim, 0.0, "tiny")
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 12, "mode": "block", "timeBudgetMs": 600_000,
                            feature: True})[0]
    plain = Settings.from_dict({**s.to_wire(), feature: False})[0]
    prepare, at = ob.prepare_partial, []
    ob.prepare_partial = lambda: (at.append(ob.length), prepare())[1]  # type: ignore[method-assign]
    for text in PROMPTS:
        runs = [Engine(x).complete(CompletionRequest(text, len(text), settings=s)) for x in (loaded, other)]
        assert [d.token_ids for d in runs[0].drafts] == [d.token_ids for d in runs[1].drafts]
        counters = [k for k in runs[1].timings if k.startswith(("spec_", "exit_"))]
        assert counters  # the feature really ran on ONNX
        if feature == "speculative":  # lossless: plain greedy's tokens
            base = Engine(other).complete(CompletionRequest(text, len(text), settings=plain))
            assert [d.token_ids for d in base.drafts] == [d.token_ids for d in runs[1].drafts]
    # The segments were loaded before the first request's prefill (outside its time budget),
    # in place of the graph of all layers.
    assert at[0] == 0 and set(ob.layers) == set(ob.segments)


def test_speculation_that_does_not_draft_keeps_to_the_graph_of_all_layers(tmp_path: Path) -> None:
    """While its probes find that exit-head drafts do not pay (here they cannot: a draft token
    is priced as dear as a full step), speculation verifies only free drafts and plain steps.
    Those are full passes, so the segments never load, and the probes read the heads' states
    from the one graph. Still plain greedy's tokens, as on torch."""
    loaded = headed_tiny(3, shortlist_every=3, thresholds={1: 0.02, 2: 0.02})
    ob = _onnx(loaded, tmp_path / "headed")
    other = LoadedModel(loaded.spec, ob, loaded.tokenizer, loaded.fim, 0.0, "tiny")
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 12, "mode": "block", "timeBudgetMs": 600_000,
                            "speculative": True})[0]
    plain = Settings.from_dict({**s.to_wire(), "speculative": False})[0]
    engines = [Engine(x) for x in (loaded, other)]
    for e in engines:
        assert e.spec_cfg is not None
        e.spec_cfg = dataclasses.replace(e.spec_cfg, short_share=1.0, probe_every=1)
    for text in PROMPTS:
        runs = [e.complete(CompletionRequest(text, len(text), settings=s)) for e in engines]
        base = Engine(other).complete(CompletionRequest(text, len(text), settings=plain))
        assert [d.token_ids for d in runs[0].drafts] == [d.token_ids for d in runs[1].drafts]
        assert [d.token_ids for d in base.drafts] == [d.token_ids for d in runs[1].drafts]
    cfgs = [e.spec_cfg for e in engines]
    assert all(c is not None and c.max_draft == 0 and c.rounds > 0 for c in cfgs)
    # The heads were probed on both backends (how many rounds there were depends on the
    # measured pass times, which decide how long the free drafts are).
    assert all(c is not None and c.probes > 0 and c.probed and min(p[1] for p in c.probed.values()) > 0
               for c in cfgs)
    assert list(ob.layers) == [(0, 4)] and not ob.kv


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_exports_stay_close(tiny: LoadedModel, tmp_path: Path, quantize: str) -> None:
    """Quantized MatMuls: not equal, but the logits keep their shape (high correlation)."""
    ob = _onnx(tiny, tmp_path / quantize, quantize)
    ids = torch.tensor([tiny.tokenizer.encode(CODE)])
    tiny.backend.reset()
    a = tiny.backend.prefill(ids)[0, -1]
    b = ob.prefill(ids)[0, -1]
    assert not torch.equal(a, b)
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95
    ops = json.loads((tmp_path / quantize / "export.json").read_text())
    assert ops["quantize"] == quantize
    _check_ir_version(tmp_path / quantize)


def _check_ir_version(folder: Path) -> None:
    """Every graph is written in opset 17's file format, which every onnxruntime we allow reads
    (onnx 1.23's own newest, 14, is refused by onnxruntime 1.31: seen on onnxruntime-gpu)."""
    import onnx

    from models.onnx_export import IR_VERSION

    files = sorted(folder.glob("*.onnx"))
    assert files and all(onnx.load(str(f), load_external_data=False).ir_version == IR_VERSION == 8 for f in files)


def _private_exports(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Exports go under root (the model cache itself stays the user's: no second dequantization)."""
    from models import onnx_export

    real = onnx_export.export_dir
    monkeypatch.setattr(onnx_export, "export_dir", lambda _root, key, *rest: real(root, key, *rest))


def test_backend_onnx_exports_once_and_falls_back_without_onnxruntime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _private_exports(monkeypatch, tmp_path)
    first = load_model("tiny", backend="onnx")
    assert first.backend.name == "onnx"
    folder = Path(str(first.info["onnx_dir"]))
    stamp = (folder / "export.json").stat().st_mtime_ns
    again = load_model("tiny", backend="onnx")
    assert (folder / "export.json").stat().st_mtime_ns == stamp  # loaded from the cache
    ids = torch.tensor([again.tokenizer.encode(CODE)])
    ref = first.backend.prefill(ids)
    assert torch.allclose(ref, again.backend.prefill(ids))
    # A corrupt file (one byte of the weights, same size) fails its checksum: exported again.
    data = max(folder.glob("*.onnx.data"), key=lambda p: p.stat().st_size)
    with open(data, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING):
        rebuilt = load_model("tiny", backend="onnx")
    assert any("fails its checksum" in r.getMessage() for r in caplog.records)
    assert (folder / "export.json").stat().st_mtime_ns != stamp
    assert torch.allclose(ref, rebuilt.backend.prefill(ids))  # (the old sessions may map the corrupt file)
    caplog.clear()
    # A runtime that cannot read the export (as onnxruntime 1.31 could not read IR 14) costs
    # the speed, not the model: torch, with a log line.
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Unsupported model IR version")

    with monkeypatch.context() as m, caplog.at_level(logging.WARNING):
        m.setattr(onnx_backend.OnnxBackend, "__init__", refuse)
        refused = load_model("tiny", backend="onnx")
    assert refused.backend.name == "torch" and torch.allclose(ref, refused.backend.prefill(ids), atol=1e-4)
    assert any("backend onnx failed (RuntimeError: Unsupported model IR version)" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(onnx_backend, "available", lambda: False)
    with caplog.at_level(logging.WARNING):
        fallback = load_model("tiny", backend="onnx")
    assert fallback.backend.name == "torch"
    assert any("onnxruntime is not installed" in r.getMessage() for r in caplog.records)


def test_backend_auto_is_onnx_runtime_where_installed_else_torch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The default, `auto`: ONNX Runtime with onnxruntime installed; torch without it, with an
    info line and no warning."""
    from decoding.settings import Settings

    assert Settings().backend == "auto"
    _private_exports(monkeypatch, tmp_path)
    assert load_model("tiny", backend="auto").backend.name == "onnx"
    monkeypatch.setattr(onnx_backend, "available", lambda: False)
    with caplog.at_level(logging.INFO):
        loaded = load_model("tiny", backend="auto")
    assert loaded.backend.name == "torch"
    assert any("backend auto: onnxruntime is not installed" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_speculation_on_quantized_weights_says_it_is_not_lossless(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A verify pass rounds int8 activations otherwise than a step: said once, on float32 never."""
    _private_exports(monkeypatch, tmp_path)
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 6, "speculative": True, "monitors": False})[0]
    for quantize, said in (("none", 0), ("int8", 1)):
        engine = Engine(load_model("tiny", backend="onnx", quantize=quantize))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                engine.complete(CompletionRequest(CODE, len(CODE), None, None, s))
        assert sum("not exactly plain decoding's output" in r.getMessage() for r in caplog.records) == said


def test_fast_int8_reads_the_cpus_flags(tmp_path: Path) -> None:
    """AVX-512 VNNI in /proc/cpuinfo's flags, as a whole word; no file means no."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n")
    assert onnx_backend.fast_int8(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx_vnni avx512f\n")
    assert not onnx_backend.fast_int8(info)
    assert not onnx_backend.fast_int8(tmp_path / "missing")


def test_quantize_auto_is_int8_on_a_cpu_with_fast_int8_products(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default `quantize: auto` exports and runs Q8_0 blocks where the CPU has AVX-512
    VNNI, float32 elsewhere and on ONNX Runtime's CUDA provider; a value set is kept."""
    assert Settings().quantize == "auto"
    _private_exports(monkeypatch, tmp_path)
    monkeypatch.setattr(onnx_backend, "fast_int8", lambda: True)
    fast = load_model("tiny", backend="onnx", quantize="auto")
    assert fast.info["quantize"] == "int8"
    meta = json.loads((Path(str(fast.info["onnx_dir"])) / "export.json").read_text())
    assert meta["quantize"] == "int8"
    assert onnx_backend.quantize_for("none", "cpu") == "none"
    assert onnx_backend.quantize_for("int4", "cpu") == "int4"
    monkeypatch.setattr(onnx_backend, "_on_cuda", lambda device: True)
    assert onnx_backend.quantize_for("auto", "cuda") == "none"
    monkeypatch.undo()
    _private_exports(monkeypatch, tmp_path)
    monkeypatch.setattr(onnx_backend, "fast_int8", lambda: False)
    plain = load_model("tiny", backend="onnx", quantize="auto")
    assert plain.info["quantize"] == "none"
    ids = torch.tensor([plain.tokenizer.encode(CODE)])
    # Different weights: the int8 export is not the float32 one under another name.
    assert not torch.equal(fast.backend.prefill(ids), plain.backend.prefill(ids))


def test_torch_keeps_one_thread_beside_onnx_runtime_on_the_cpu(tiny_pair: tuple[LoadedModel, OnnxBackend]) -> None:
    """ONNX Runtime's pool threads spin on the cores after a run; torch work split over two
    threads then waits for a core (models/threads.py). torch has one thread while ONNX
    Runtime runs, and the torch backend gets its threads back."""
    tiny, ob = tiny_pair
    was = torch.get_num_threads()
    ids = torch.tensor([tiny.tokenizer.encode(CODE)[:12]])
    try:
        torch.set_num_threads(2)
        ob.reset()
        ob.prefill(ids)
        assert torch.get_num_threads() == 1
        tiny.backend.reset()
        tiny.backend.prefill(ids)
        assert torch.get_num_threads() == 2
        ob.step(ids[:, :1])
        assert torch.get_num_threads() == 1
        tiny.backend.step(ids[:, :1])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(was)


def test_backend_auto_is_torch_on_a_gpu_unless_quantized(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CUDA GPU torch replays its steps as CUDA graphs, faster than ONNX Runtime's CUDA
    provider; quantized weights are ONNX Runtime's alone. (Whether torch sees a GPU is faked:
    the choice, not the run, is under test here.)"""
    from models.loading import resolve_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto", "auto") == "torch" and resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("auto", "cuda", "auto") == "torch"  # the default quantize asks for nothing
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("auto", "cuda", "int4") == "onnx"
    assert resolve_backend("onnx", "cuda") == "onnx"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto", "auto") == "onnx"


@pytest.mark.model
def test_default_model_logits_and_greedy_drafts_match_torch(smol: LoadedModel, tmp_path: Path) -> None:
    """Float32 parity on SmolLM2 within 1e-3, and the same greedy drafts."""
    ob = _onnx(smol, tmp_path / "smol")
    ids = smol.tokenizer.encode(CODE * 4)[:300]
    _check_parity(smol.backend, ob, ids, 1e-3)
    other = LoadedModel(smol.spec, ob, smol.tokenizer, smol.fim, 0.0, "cache")
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 16, "mode": "block", "timeBudgetMs": 600_000,
                            "monitors": False})[0]
    assert _drafts(other, s) == _drafts(smol, s)


def _cuda_provider() -> None:
    import onnxruntime as ort

    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu with a CUDA GPU is not available")


@pytest.mark.gpu
def test_cuda_provider_keeps_the_cache_on_the_gpu_and_matches_the_cpu(
        tiny_pair: tuple[LoadedModel, OnnxBackend], tmp_path: Path) -> None:
    _cuda_provider()
    tiny, ob = tiny_pair
    gb = _onnx(tiny, tmp_path / "gpu", device="cuda")
    assert gb.cuda and gb.bound and gb.k[0].device.type == "cuda"
    _check_parity(ob, gb, tiny.tokenizer.encode(CODE * 40)[:600], 1e-3)  # two capacity doublings
    assert gb.k[-1].device.type == "cuda" and gb.capacity >= 603
    on_gpu = LoadedModel(tiny.spec, gb, tiny.tokenizer, tiny.fim, 0.0, "tiny")
    s = Settings.from_dict({"drafts": 3, "maxNewTokens": 10, "mode": "block", "timeBudgetMs": 600_000})[0]
    got = _drafts(tiny, s)
    assert _drafts(on_gpu, s) == got and all(len(d) == 3 for d in got)


@pytest.mark.gpu
def test_speculation_on_the_cuda_provider_gives_plain_greedy(tmp_path: Path) -> None:
    """Rollback of a cache that lives on the GPU: speculative tokens equal greedy's there."""
    _cuda_provider()
    loaded = headed_tiny(3, shortlist_every=3, thresholds={1: 0.02, 2: 0.02})
    gb = _onnx(loaded, tmp_path / "headed", device="cuda")
    assert gb.bound
    other = LoadedModel(loaded.spec, gb, loaded.tokenizer, loaded.fim, 0.0, "tiny")
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 16, "mode": "block", "timeBudgetMs": 600_000,
                            "speculative": True})[0]
    plain = Settings.from_dict({**s.to_wire(), "speculative": False})[0]
    accepted = 0
    for text in PROMPTS:
        spec = Engine(other).complete(CompletionRequest(text, len(text), settings=s))
        base = Engine(other).complete(CompletionRequest(text, len(text), settings=plain))
        assert [d.token_ids for d in spec.drafts] == [d.token_ids for d in base.drafts]
        accepted += int(spec.timings.get("spec_accepted", 0))
    assert accepted > 0  # drafts were accepted, so the cache was rolled back past rejections


@pytest.mark.gpu
@pytest.mark.model
def test_default_model_on_the_cuda_provider_gives_the_cpu_drafts(smol: LoadedModel, tmp_path: Path) -> None:
    _cuda_provider()
    gb = _onnx(smol, tmp_path / "smol", device="cuda")
    ids = smol.tokenizer.encode(CODE * 4)[:300]
    _check_parity(smol.backend, gb, ids, 1e-3)
    other = LoadedModel(smol.spec, gb, smol.tokenizer, smol.fim, 0.0, "cache")
    s = Settings.from_dict({"drafts": 3, "maxNewTokens": 16, "mode": "block", "timeBudgetMs": 600_000})[0]
    assert _drafts(other, s) == _drafts(smol, s)


def test_export_command_writes_what_backend_onnx_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`draftls export-onnx` ahead of time: the first use of backend onnx with the default
    settings (`quantize: auto`, whatever it means on this CPU) finds it and exports nothing."""
    from lsp.cli import main

    _private_exports(monkeypatch, tmp_path)
    assert main(["export-onnx", "--model", "tiny"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert folder.is_relative_to(tmp_path) and (folder / "head.onnx").is_file()
    stamp = (folder / "export.json").stat().st_mtime_ns
    loaded = load_model("tiny", backend="onnx", quantize=Settings().load_quantize)
    assert Path(str(loaded.info["onnx_dir"])) == folder
    assert (folder / "export.json").stat().st_mtime_ns == stamp
