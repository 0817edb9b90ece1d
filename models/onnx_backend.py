"""The ONNX Runtime backend: the exported graphs (models/onnx_export.py) behind the Backend interface.

The KV cache lives here: per layer one buffer for K and one for V [1, Hkv, C, Dh], and a
fill length. The graphs read whole buffers and only the filled part counts, so rolling back
is setting the length. Capacity doubles when full. The buffers are torch tensors bound in
place with I/O binding:
- on the CPU (graphs with GroupQueryAttention), host tensors that the attention kernel
  reads and appends the new K/V to, in place;
- on CUDA (onnxruntime-gpu, graphs with plain attention ops), CUDA tensors of torch, so the
  cache never leaves the GPU; only the hidden state, masks and logits cross (a few KB a
  token), and the new K/V are appended here. With a CPU-only torch beside onnxruntime-gpu
  the buffers stay on the host and are copied in on each call (said once in the log).

Plain decoding runs all layers in one graph. Early exit and self-speculation run the
export's segments (cut at the exit layers), loaded when first needed in place of that graph;
they work as on torch where their layers are segment bounds, and per-layer fill lengths let
speculation run the early layers ahead of the late ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models import threads as torch_threads
from models.config import ModelConfig
from models.llama import linear

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256


def available() -> bool:
    """True when onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _on_cuda(device: str) -> bool:
    """True when this device setting runs on ONNX Runtime's CUDA provider (onnxruntime-gpu)."""
    import onnxruntime as ort

    return device in ("cuda", "auto") and "CUDAExecutionProvider" in ort.get_available_providers()


def providers(device: str) -> list[str]:
    """The execution providers for a device (cuda only where onnxruntime-gpu sees a GPU)."""
    if _on_cuda(device):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        import onnxruntime as ort

        log.warning("device cuda asked for, but onnxruntime has no CUDA provider (%s): using the CPU",
                    ort.get_available_providers())
    return ["CPUExecutionProvider"]


def fast_int8(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on CPUs with AVX-512 VNNI, where ONNX Runtime's 8-bit block products decode about
    twice as fast as float32 and prefill no slower (BENCHMARKS.md, issue 8). On the AVX2 CPU
    measured, int8 decoded faster too but prefilled a third slower, so float32 stays there."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:  # no /proc (macOS, Windows): not measured, so float32
        return False
    return "avx512_vnni" in flags.split()


def quantize_for(quantize: str, device: str) -> str:
    """The weights that `quantize: auto` means: int8 (Q8_0 blocks, no exact match lost on the
    dev set) where ONNX Runtime runs on a CPU with fast int8 products, else float32."""
    if quantize != "auto":
        return quantize
    return "int8" if not _on_cuda(device) and fast_int8() else "none"


def attention_for(device: str) -> str:
    """The export's attention for a device (models/onnx_export.py): plain operators where the
    CUDA provider will run the graphs, GroupQueryAttention on the CPU."""
    return "plain" if _on_cuda(device) else "gqa"


_POOL: int | None = None


def _global_threads(n: int) -> None:
    """Size ONNX Runtime's process-wide thread pool, once (it is fixed when the first session
    that uses it is created; later sizes are ignored with a log line)."""
    global _POOL
    if _POOL is None:
        from onnxruntime.capi import _pybind_state

        _pybind_state.set_global_thread_pool_sizes(n, 1)
        _POOL = n
    elif _POOL != n:
        log.info("ONNX Runtime's thread pool has %d threads already; %d asked for", _POOL, n)


class OnnxBackend:
    """Backend over an export folder (models/onnx_export.py); the embedding table is given, and
    exit heads (adapters by layer, a shortlist, thresholds) may be attached as on torch."""

    name = "onnx"

    def __init__(self, folder: Path, config: ModelConfig, embed_weight: np.ndarray, head_weight: np.ndarray,
                 norm_weight: np.ndarray, device: str = "cpu", threads: int | None = None,
                 bind: bool | None = None):
        import onnxruntime as ort

        self.config = config
        self.exit_heads: dict[int, torch.nn.Module] = {}
        self.exit_thresholds: dict[int, float] = {}
        self.shortlist: Tensor | None = None
        self._short_weight: Tensor | None = None
        self.dtype = torch.float32
        self.embed_weight = np.ascontiguousarray(embed_weight, dtype=np.float32)  # [V, D]
        self.head_weight = np.asarray(head_weight, dtype=np.float32)  # [V, D] (the same array when tied)
        self.norm_weight = torch.from_numpy(np.asarray(norm_weight, np.float32))  # final norm, for draft logits
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only: its optimizer's notes are not the user's business
        # No memory arena: it kept the peak of every shape it saw (prefill chunks, tree steps),
        # about 100 MB more resident over a typing soak, and measured no faster without it.
        so.enable_cpu_mem_arena = False
        # All sessions (one per segment) share one thread pool: with a pool each, the spinning
        # threads of the last session steal the cores from the next (measured: 4x slower steps).
        _global_threads(threads or torch_threads.configured())
        so.use_per_session_threads = False
        self.providers = providers(device)
        self.folder = folder
        meta = json.loads((folder / "export.json").read_text())
        self.segments = [(int(a), int(b)) for a, b in meta["segments"]]
        # GroupQueryAttention graphs append the new K/V to the bound buffers themselves.
        self.gqa = meta.get("attention") == "gqa"
        # Float32 stays float32 on the GPU: no TF32 matrix products, whose rounding would
        # change greedy tokens against the CPU and torch.
        options = [{"use_tf32": "0"} if p == "CUDAExecutionProvider" else {} for p in self.providers]
        session = lambda name: ort.InferenceSession(str(folder / name), so, providers=self.providers,  # noqa: E731
                                                    provider_options=options)
        self._session = session
        # Plain decoding runs all layers in one graph; the segments' graphs load when early exit
        # or speculation first runs part of the layers (`prepare_partial`).
        whole = (0, config.num_layers)
        self.layers: dict[tuple[int, int], Any] = {}
        self._load_layers(*whole)
        self.kv: dict[tuple[int, int], Any] = {}  # state copying's graphs, loaded on first use
        self.head = session("head.onnx")
        # A CUDA provider that is listed but cannot load (no CUDA or cuDNN libraries found)
        # leaves the session on the CPU: believe the session, not the list.
        self.cuda = "CUDAExecutionProvider" in self.head.get_providers()
        if self.providers[0] == "CUDAExecutionProvider" and not self.cuda:
            log.warning("ONNX Runtime's CUDA provider did not load (see its log above): running on the CPU")
            self.providers = ["CPUExecutionProvider"]
        if self.gqa and self.cuda:
            # ORT's CUDA GroupQueryAttention has no float32 kernel: the node would fall back to
            # the CPU, away from the cache it must write into.
            raise ValueError("GroupQueryAttention graphs run on the CPU provider: export with plain attention for CUDA")
        self.runs_on = "cuda" if self.cuda else "cpu"  # where the graphs run
        self.device = torch.device("cpu")  # where the tensors it returns live
        # I/O binding needs memory we can write into at an offset: torch's. The GQA graphs
        # always bind (past and present are one buffer); plain graphs bind on CUDA, and `bind`
        # forces it either way (on the CPU it binds host memory: for tests).
        on_gpu = self.cuda and torch.cuda.is_available()
        if self.gqa and bind is False:
            raise ValueError("GroupQueryAttention graphs need the cache bound in place")
        self.bound = self.gqa or (on_gpu if bind is None else bind)
        if self.cuda and not on_gpu:
            log.info("torch has no CUDA here: the ONNX Runtime KV cache stays on the host, copied to the GPU each call")
        self.cache_device = torch.device("cuda" if on_gpu and self.bound else "cpu")
        inv_freq, self.rope_scale = config.inv_freq()
        self.inv_freq = inv_freq.numpy().astype(np.float64)
        self.lens = [0] * config.num_layers  # fill per layer (they differ only mid-speculation)
        self._bindings: dict[int, tuple[Any, tuple[int, ...]]] = {}  # per session: its I/O binding, for these buffers
        self._names: dict[int, list[str]] = {}  # per session: its output names
        self._alloc(256)

    def attach_heads(self, adapters: dict[int, torch.nn.Module], shortlist: Tensor | None,
                     thresholds: dict[int, float] | None = None) -> None:
        """Exit adapters at segment bounds (others are dropped with a log line), a shortlist, thresholds."""
        bounds = {a for a, _ in self.segments}
        dropped = sorted(set(adapters) - bounds)
        if dropped:
            log.info("exit heads at layers %s are not segment bounds of this export: not used", dropped)
        self.exit_heads = {l: a.float().eval() for l, a in adapters.items() if l in bounds}
        self.exit_thresholds = {l: t for l, t in (thresholds or {}).items() if l in self.exit_heads}
        self.shortlist = shortlist
        self._short_weight = None
        if shortlist is not None:
            self._short_weight = torch.from_numpy(self.head_weight[shortlist.cpu().numpy()])

    # -- cache -------------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        """(Re)allocate the buffers with room for `capacity` positions, keeping what is filled."""
        c = self.config
        old = (self.k, self.v) if hasattr(self, "k") else None
        zeros = lambda: torch.zeros(1, c.num_kv_heads, capacity, c.head_dim, dtype=torch.float32,  # noqa: E731
                                    device=self.cache_device)
        self.k = [zeros() for _ in range(c.num_layers)]
        self.v = [zeros() for _ in range(c.num_layers)]
        if old is not None:
            for i, n in enumerate(self.lens):
                self.k[i][:, :, :n] = old[0][i][:, :, :n]
                self.v[i][:, :, :n] = old[1][i][:, :, :n]
        self.capacity = capacity
        if self.gqa:  # the GQA kernel's RoPE tables over every position the buffers hold
            rope = self._rope(np.arange(capacity))
            self.rope_tables = {name: torch.from_numpy(rope[name]) for name in ("cos", "sin")}

    def _append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Write the new K/V [1, Hkv, T, Dh] after the layer's fill."""
        n, t = self.lens[layer], k.shape[2]
        if n + t > self.capacity:
            self._alloc(max(2 * self.capacity, n + t))
        self.k[layer][:, :, n : n + t] = k
        self.v[layer][:, :, n : n + t] = v
        self.lens[layer] = n + t

    def _run(self, session: Any, feed: dict[str, np.ndarray], past: dict[str, Tensor],
             shapes: list[tuple[int, ...] | Tensor]) -> list[Tensor]:
        """Run a graph on host inputs `feed` and cache buffers `past`; its outputs (of `shapes`,
        or written into the given tensors) as tensors on the cache's device. When bound, the
        buffers and outputs are bound in place."""
        if not self.cuda:
            torch_threads.for_onnx_runtime()
        if not self.bound:
            out = session.run(None, {**feed, **{name: t.numpy() for name, t in past.items()}})
            return [torch.from_numpy(o) for o in out]
        dev = self.cache_device.type
        # One binding per graph, kept: the cache buffers (and outputs written into them) are
        # bound again only when they move (capacity doubled); the small inputs every call.
        kept = [t for t in (*past.values(), *shapes) if isinstance(t, Tensor)]
        # A binding made for more outputs would keep the extra ones bound to freed memory.
        key = (self.capacity, len(shapes), *(t.data_ptr() for t in kept))
        names = self._names.get(id(session))
        if names is None:  # asked once a graph: get_outputs() builds its objects anew each call
            names = self._names[id(session)] = [o.name for o in session.get_outputs()]
        io, bound_key = self._bindings.get(id(session), (None, None))
        if io is None or bound_key != key:
            io = session.io_binding()
            for name, t in past.items():
                io.bind_input(name, dev, 0, np.float32, list(t.shape), t.data_ptr())
            for name, t in zip(names, shapes):
                if isinstance(t, Tensor):
                    io.bind_output(name, dev, 0, np.float32, list(t.shape), t.data_ptr())
            self._bindings[id(session)] = (io, key)
        for name, x in feed.items():
            io.bind_cpu_input(name, x)
        outs = []
        for name, shape in zip(names, shapes):
            t = shape
            if not isinstance(t, Tensor):
                t = torch.empty(shape, dtype=torch.float32, device=self.cache_device)
                io.bind_output(name, dev, 0, np.float32, list(shape), t.data_ptr())
            outs.append(t)
        if dev == "cuda":
            # torch queues the cache writes on its own stream: they must land before ONNX
            # Runtime reads the buffers on its stream (its run returns once its work is done).
            torch.cuda.synchronize(self.cache_device)
        session.run_with_iobinding(io)
        return outs

    def _kv_shapes(self, t: int, a: int, b: int) -> list[tuple[int, ...]]:
        """The shapes of the new K and V [1, Hkv, T, Dh] that layers [a, b) output, in order."""
        return [(1, self.config.num_kv_heads, t, self.config.head_dim)] * (2 * (b - a))

    @property
    def length(self) -> int:
        return self.lens[0]

    @property
    def batch(self) -> int:
        return 1

    def layer_lengths(self) -> list[int]:
        return list(self.lens)

    def reset(self, batch: int = 1) -> None:
        if batch != 1:
            raise ValueError("the ONNX backend decodes one sequence (drafts go side by side in it)")
        self.lens = [0] * self.config.num_layers

    def truncate(self, n: int) -> None:
        self.lens = [min(length, max(n, 0)) for length in self.lens]

    def select(self, rows: Tensor) -> None:
        if rows.tolist() != [0]:
            raise ValueError("the ONNX backend keeps one sequence")

    # -- forward -------------------------------------------------------------------------------

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings: [B, T] -> [B, T, D]."""
        return torch.from_numpy(self.embed_weight[ids.cpu().numpy()])

    def _rope(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The graphs' RoPE inputs for these positions: cos/sin [T, Dh/2] (scaled) and pos [1, T]."""
        freqs = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        return {"cos": (np.cos(freqs) * self.rope_scale).astype(np.float32),
                "sin": (np.sin(freqs) * self.rope_scale).astype(np.float32),
                "pos": np.arange(len(positions), dtype=np.int64)[None, :]}

    def _segments(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The loaded graphs that run layers [start, stop), in order."""
        if (start, stop) in self.layers:
            return [(start, stop)]
        segs = self._cut(start, stop)
        self.prepare_partial()
        return segs

    def _cut(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The export's segments that make up layers [start, stop)."""
        segs = [(a, b) for a, b in self.segments if start <= a and b <= stop]
        if not segs or segs[0][0] != start or segs[-1][1] != stop:
            raise NotImplementedError(f"layers [{start}, {stop}) do not fall on the export's segments {self.segments}")
        return segs

    def prepare_partial(self) -> None:
        """Get ready to run part of the layers (early exit, speculation): load the segments'
        graphs and drop the all-layers one, so that the weights are never held twice. From
        now on every pass runs segment by segment. The engine calls this before a request's
        time budget starts; the first partial pass would otherwise."""
        whole = (0, self.config.num_layers)
        if whole in self.layers and whole not in self.segments:
            log.info("loading the ONNX layer segments %s (early exit or speculation)", self.segments)
            self._drop_layers(whole)
        for a, b in self.segments:
            if (a, b) not in self.layers:
                self._load_layers(a, b)

    def prepare_full(self) -> None:
        """Back to the graph of all layers, dropping the segments: speculation stopped drafting
        with the exit heads, so only full passes come (until a partial pass loads them again)."""
        whole = (0, self.config.num_layers)
        if whole in self.layers:
            return
        log.info("back to the ONNX graph of all layers (no exit-head drafts)")
        for seg in self.segments:
            self._drop_layers(seg)
        self._load_layers(*whole)

    def _load_layers(self, a: int, b: int) -> None:
        self.layers[(a, b)] = self._session(f"layers_{a}_{b}.onnx")

    def _drop_layers(self, key: tuple[int, int]) -> None:
        old = self.layers.pop(key)
        self._bindings.pop(id(old), None)  # keyed by id: a later session may get the same one
        self._names.pop(id(old), None)

    def _layers(self, h: np.ndarray, start: int, stop: int, positions: np.ndarray | None = None,
                past: np.ndarray | None = None, new: np.ndarray | None = None,
                states: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """Layers [start, stop) on h [1, T, D] for new positions (causal unless `past` [T, n] and
        `new` [T, T] say which keys each token sees); appends their K/V; returns [1, T, D].
        `states`, if given, receives the residual stream at every segment end on the way."""
        t, n = h.shape[1], self.lens[start]
        if self.lens[start:stop] != [n] * (stop - start):
            raise RuntimeError(f"layers {start}..{stop} hold {self.lens[start:stop]} positions")
        positions = np.arange(n, n + t) if positions is None else positions
        need = max(n + t, int(positions.max()) + 1)  # the GQA kernel's RoPE tables reach every position
        if need > self.capacity:
            self._alloc(max(2 * self.capacity, need))
        if self.gqa:
            # Causal within the new tokens is the kernel's; the bias hides what a tree mask hides
            # (a token's ancestors always come before it, so causal never hides one of them).
            bias = np.zeros((1, 1, t, n + t), np.float32)
            if past is not None:
                bias[0, 0, :, :n] = np.where(past, 0.0, -np.inf)
            if new is not None:
                bias[0, 0, :, n:] = np.where(new, 0.0, -np.inf)
            masks = {"seqlens_k": np.array([n + t - 1], np.int32), "total_len": np.array(n + t, np.int32),
                     "bias": bias, "pos": positions.astype(np.int64)[None, :]}
        else:
            mask_past = np.full((t, self.capacity), -np.inf, np.float32)
            mask_past[:, :n] = 0.0 if past is None else np.where(past, 0.0, -np.inf)
            tree = np.tril(np.ones((t, t), bool)) if new is None else new
            masks = {"mask_past": mask_past, "mask_new": np.where(tree, 0.0, -np.inf).astype(np.float32)}
        # GQA graphs index the bound RoPE tables by `pos`; the others take the tokens' own rows.
        rope = {} if self.gqa else self._rope(positions)
        h = np.ascontiguousarray(h, np.float32)
        for a, b in self._segments(start, stop):
            cache = {}
            for i in range(a, b):
                cache[f"past_k.{i}"] = self.k[i]
                cache[f"past_v.{i}"] = self.v[i]
            buffers = {**self.rope_tables, **cache} if self.gqa else cache  # bound in place
            # The GQA graphs write the new K/V into the buffers (bound as their outputs too).
            kv: list[tuple[int, ...] | Tensor] = (list(cache.values()) if self.gqa else self._kv_shapes(t, a, b))
            # The all-layers graph also outputs the stream at the segments' ends, after the K/V:
            # bound on every run, wanted or not, since a binding made anew costs a run or more.
            ends = [e for _, e in self.segments[:-1]] if (a, b) not in self.segments else []
            extra = [tuple(h.shape)] * len(ends)
            out = self._run(self.layers[(a, b)], {"h": h, **masks, **rope}, buffers, [tuple(h.shape), *kv, *extra])
            for j, i in enumerate(range(a, b)):
                if self.gqa:
                    self.lens[i] = n + t
                else:
                    self._append(i, out[1 + 2 * j], out[2 + 2 * j])
            h = out[0].cpu().numpy()
            if states is not None:
                # Unbound, the graph returns every output: the states are its last ones either way.
                states.update({e: o.cpu().numpy() for e, o in zip(ends, out[len(out) - len(ends):])})
                states[b] = h
        return h

    def _logits(self, h: np.ndarray) -> Tensor:
        if not self.cuda:
            torch_threads.for_onnx_runtime()
        return torch.from_numpy(self.head.run(None, {"h": np.ascontiguousarray(h, np.float32)})[0])

    @torch.inference_mode()
    def run_layers(self, h: Tensor, start: int, stop: int) -> Tensor:
        """Layers [start, stop) (segment bounds of the export) on h [1, T, D]; appends their K/V."""
        return torch.from_numpy(self._layers(h.float().cpu().numpy(), start, stop))

    @torch.inference_mode()
    def exit_logits(self, h: Tensor, layer: int) -> Tensor:
        """Logits [1, T, V] from the residual stream after `layer` layers (its exit adapter, if any)."""
        head = self.exit_heads.get(layer)
        if head is not None and layer < self.config.num_layers:
            h = head(h.float())
        return self._logits(h.float().cpu().numpy())

    @torch.inference_mode()
    def draft_logits(self, h: Tensor, layer: int) -> Tensor:
        """As exit_logits, but only the shortlist's rows of the LM head (-inf elsewhere)."""
        if self._short_weight is None or self.shortlist is None:
            return self.exit_logits(h, layer)
        head = self.exit_heads.get(layer)
        x = head(h.float()) if head is not None else h.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.config.rms_norm_eps) * self.norm_weight
        short = linear(x, self._short_weight)  # [1, T, K]
        out = torch.full((*short.shape[:-1], self.config.vocab_size), float("-inf"))
        out[..., self.shortlist] = short
        return out

    @torch.inference_mode()
    def fill_kv(self, h: Tensor, start: int, stop: int) -> None:
        """Fill skipped layers [start, stop) from an exited state (state copying)."""
        if start >= stop:
            return
        x = np.ascontiguousarray(h.float().cpu().numpy(), np.float32)
        n, t = self.lens[start], x.shape[1]
        rope = self._rope(np.arange(n, n + t))
        for a, b in self._cut(start, stop):
            if (a, b) not in self.kv:
                self.kv[(a, b)] = self._session(f"kv_{a}_{b}.onnx")
            out = self._run(self.kv[(a, b)], {"h": x, **rope}, {}, self._kv_shapes(t, a, b))
            for j, i in enumerate(range(a, b)):
                self._append(i, out[2 * j], out[2 * j + 1])

    @torch.inference_mode()
    def step(self, ids: Tensor | None = None, embeds: Tensor | None = None) -> Tensor:
        """Extend the cache by ids [1, T] (or embeds [1, T, D]); logits [1, T, V]."""
        h = self.embed(ids) if embeds is None else embeds
        return self._logits(self._layers(h.float().cpu().numpy(), 0, self.config.num_layers))

    @torch.inference_mode()
    def step_states(self, ids: Tensor, layers: list[int]) -> tuple[Tensor, dict[int, Tensor]]:
        """As `step`, and the residual stream [1, T, D] after each of `layers` (segment ends), in
        one run of the all-layers graph while it is loaded."""
        states: dict[int, np.ndarray] = {}
        h = self._layers(self.embed(ids).numpy(), 0, self.config.num_layers, states=states)
        if missing := [l for l in layers if l not in states]:
            raise NotImplementedError(f"layers {missing} are not ends of the export's segments {self.segments}")
        return self._logits(h), {l: torch.from_numpy(states[l]) for l in layers}

    @torch.inference_mode()
    def step_tree(self, ids: Tensor, positions: Tensor, visible: Tensor) -> Tensor:
        """Append ids [1, T] at `positions` [T], token i seeing the keys `visible` [T, length + T] marks."""
        n = self.length
        vis = visible.cpu().numpy().astype(bool)
        h = self.embed(ids).numpy()
        return self._logits(self._layers(h, 0, self.config.num_layers, positions.cpu().numpy(), vis[:, :n], vis[:, n:]))

    @torch.inference_mode()
    def prefill(self, ids: Tensor, all_logits: bool = False) -> Tensor:
        """Extend the cache by ids [1, T] in chunks; logits [1, 1, V] (or [1, T, V])."""
        if ids.shape[1] == 0:
            raise ValueError("prefill needs at least one token")
        outs = []
        h = None
        for i in range(0, ids.shape[1], PREFILL_CHUNK):
            h = self._layers(self.embed(ids[:, i : i + PREFILL_CHUNK]).numpy(), 0, self.config.num_layers)
            if all_logits:
                outs.append(self._logits(h))
        if all_logits:
            return torch.cat(outs, dim=1)
        assert h is not None
        return self._logits(h[:, -1:])
