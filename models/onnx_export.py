"""Export a Llama-family model to ONNX graphs with an explicit KV cache, for ONNX Runtime.

The graphs are built op by op from the weights (no tracing, so every shape stays
symbolic). The layers are cut into segments at the exit layers, so that early exit and
self-speculation can run the first layers, read an exit head, and run the rest:

- `layers_a_b.onnx`: layers [a, b) on a residual stream `h` [1, T, D] (token embeddings or
  any mix of them: superposed decoding feeds its own). Inputs: `cos`, `sin` [T, Dh/2] for
  the new tokens' positions and `pos` [1, T] (0..T-1, the rows of those), and per layer the
  cache buffers `past_k.i`, `past_v.i` [1, Hkv, C, Dh]. The caller owns the cache: C is the
  buffer's capacity, of which the first n positions are filled. Attention comes in two
  flavours (`ATTENTION`):
  - `gqa` (the CPU's): ONNX Runtime's GroupQueryAttention, one kernel a layer, on the packed
    q/k/v, which it rotates itself: `cos`, `sin` are then tables [P, Dh/2] over positions
    0..P-1 (P >= n + T) and `pos` [1, T] the tokens' positions in them. Inputs
    `seqlens_k` [1] (n + T - 1), `total_len` (n + T) and an additive `bias` [1, 1, T, n + T]
    over the keys each token sees (zeros for a plain causal step; tree masks for drafts side
    by side and speculation's verify passes). It writes the new K/V into the buffers in
    place: outputs `present_k.i`, `present_v.i` are bound to the same memory as `past_k.i`,
    `past_v.i` (I/O binding), so nothing is concatenated or copied.
  - `plain` (CUDA's: ORT's CUDA GroupQueryAttention has no float32 kernel): the attention in
    plain operators, masks `mask_past` [T, C] and `mask_new` [T, T], the softmax split over
    past and new keys; outputs the new tokens' `new_k.i`, `new_v.i` [1, Hkv, T, Dh], which
    the caller appends.
  Outputs `h_out` [1, T, D] and the K/V above. ORT's fused kernels do the small work:
  SimplifiedLayerNormalization and SkipSimplifiedLayerNormalization (the residual add with
  the next norm), RotaryEmbedding; q/k/v and gate/up are one MatMul each over concatenated
  weights.
- `layers_0_N.onnx`: all N layers in one graph, the segments chained (`chain`), reading the
  segments' weight files: plain decoding runs one graph a token, not one a segment (about
  1 ms a token less, BENCHMARKS.md).
- `kv_a_b.onnx`: each layer's K/V from one input `h` (state copying for skipped layers).
- `head.onnx`: the final norm and the LM head, `h` [1, T, D] -> `logits` [1, T, V].

The embedding table stays outside (a row lookup). Quantized variants replace the MatMuls
with ONNX Runtime's MatMulNBits in llama.cpp's block formats (models/quantize.py): int8 is
Q8_0 throughout; int4 is Q4_1 in the layers and Q8_0 in the LM head, the default model's own
GGUF formats, so its blocks come back exactly.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.config import ModelConfig
from models.llama import LlamaModel
from models.loading import sha256_file
from models.quantize import quantize_graph

log = logging.getLogger(__name__)

OPSET = 17
# The file format version: opset 17's own, not the installed onnx's newest (onnx 1.23 writes
# 14, which onnxruntime 1.31 and older refuse). Every onnxruntime we allow reads 8.
IR_VERSION = 8
FORMAT = 9  # bump when the graphs change (6: GroupQueryAttention, keys no longer stored transposed;
# 7: GQA on packed q/k/v with its own RoPE; quantized in llama.cpp's block formats; 8: all layers
# in one graph too; 9: that graph also outputs the residual stream at the segments' ends)
QUANTIZE = ("none", "int8", "int4")
ATTENTION = ("gqa", "plain")


class _Graph:
    """A small builder: named nodes, initializers from numpy, fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], domain: str = "", outputs: int = 1, name: str | None = None,
           **attrs: object) -> str:
        self.n += 1
        outs = [name or f"{op.lower()}_{self.n}"] + [f"{op.lower()}_{self.n}_{i}" for i in range(1, outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"n{self.n}", domain=domain, **attrs))
        return outs[0]

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None, name: str) -> str:
        """x @ weight^T (+ bias); the weight is stored as [K, N] for MatMul."""
        y = self.op("MatMul", [x, self.const(name, weight.T)])
        return self.op("Add", [y, self.const(name + ".bias", bias)]) if bias is not None else y

    def packed(self, x: str, weights: list[np.ndarray], biases: list[np.ndarray | None], name: str) -> str:
        """Several projections of one input as one MatMul over the concatenated weights: one
        kernel call reads the input once (q/k/v, gate/up); their outputs side by side."""
        w = np.concatenate([wt.T for wt in weights], axis=1)
        y = self.op("MatMul", [x, self.const(name, w)])
        if any(b is not None for b in biases):
            b = np.concatenate([bb if bb is not None else np.zeros(wt.shape[0], np.float32)
                                for bb, wt in zip(biases, weights)])
            y = self.op("Add", [y, self.const(name + ".bias", b)])
        return y

    def linears(self, x: str, weights: list[np.ndarray], biases: list[np.ndarray | None], name: str) -> list[str]:
        """`packed`, then a Split into the projections."""
        y = self.packed(x, weights, biases, name)
        sizes = self.const(name + ".split", np.array([wt.shape[0] for wt in weights], np.int64))
        first = self.op("Split", [y, sizes], outputs=len(weights), axis=-1)
        return [first] + [f"{first}_{i}" for i in range(1, len(weights))]

    def rms_norm(self, x: str, weight: np.ndarray, eps: float, name: str) -> str:
        # ORT's fused kernel (one op in place of seven: Mul, ReduceMean, Add, Sqrt, Reciprocal, Mul, Mul).
        return self.op("SimplifiedLayerNormalization", [x, self.const(name, weight)], axis=-1, epsilon=eps,
                       stash_type=1)

    def add_rms_norm(self, x: str, skip: str, weight: np.ndarray, eps: float, name: str) -> tuple[str, str]:
        """(rms_norm(x + skip), x + skip) in one fused op."""
        out = self.op("SkipSimplifiedLayerNormalization", [skip, x, self.const(name, weight)], domain="com.microsoft",
                      outputs=4, epsilon=eps)
        return out, f"{out}_3"


def _np(t: object) -> np.ndarray:
    return t.detach().float().cpu().numpy()  # type: ignore[attr-defined]


def _rope(g: _Graph, x: str, heads: int) -> str:
    """RoPE on x [1, T, heads * Dh] with ORT's fused kernel; `cos`/`sin` [T, Dh/2] are the
    tokens' own rows (the caller computes them, with any scaling), `pos` [1, T] is 0..T-1."""
    return g.op("RotaryEmbedding", [x, "pos", "cos", "sin"], domain="com.microsoft", num_heads=heads, interleaved=0)


def build_layers(model: LlamaModel, start: int, stop: int, kv_only: bool = False,
                 attention: str = "gqa") -> onnx.ModelProto:
    """The graph of layers [start, stop) with the given attention (see the module docstring).
    With kv_only, each layer's K/V computed from the same input `h` (early exit's state
    copying), nothing else."""
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}")
    cfg: ModelConfig = model.cfg
    d, h, kv, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    group = h // kv
    gqa = attention == "gqa" and not kv_only
    plain = attention == "plain" and not kv_only
    g = _Graph()
    f = TensorProto.FLOAT
    # RoPE: the GQA kernel rotates q and k itself from tables over all positions, indexed by
    # the tokens' positions; the other graphs get the tokens' own rows (see _rope).
    rows = "P" if gqa else "T"
    inputs = [
        helper.make_tensor_value_info("h", f, [1, "T", d]),
        helper.make_tensor_value_info("cos", f, [rows, dh // 2]),
        helper.make_tensor_value_info("sin", f, [rows, dh // 2]),
        helper.make_tensor_value_info("pos", TensorProto.INT64, [1, "T"]),
    ]
    if gqa:
        inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
                   helper.make_tensor_value_info("total_len", TensorProto.INT32, []),
                   helper.make_tensor_value_info("bias", f, [1, 1, "T", "L"])]
    if plain:
        inputs += [helper.make_tensor_value_info("mask_past", f, ["T", "C"]),
                   helper.make_tensor_value_info("mask_new", f, ["T", "T"])]
    outputs = []
    shape = lambda name, dims: g.const(name, np.array(dims, np.int64))  # noqa: E731
    kv_shape = "" if gqa else shape("kv_shape", [1, -1, kv, dh])
    scale = 1.0 / math.sqrt(dh)
    if plain:
        q_shape = shape("q_shape", [1, -1, h, dh])
        grouped = shape("grouped", [1, kv, -1, dh])  # [1, H, T, Dh] -> [1, Hkv, g*T, Dh] (heads are grouped)
        heads = shape("heads", [1, h, -1, dh])
        flat = shape("flat", [1, -1, h * dh])
        # Row j*T + t of a group's scores is query t: the masks repeat g times down (once for all layers).
        reps = shape("reps", [group, 1])
        mask_past = g.op("Tile", ["mask_past", reps])  # [g*T, C]
        mask_new = g.op("Tile", ["mask_new", reps])  # [g*T, T]
    x = "h"
    bias = lambda m: _np(m.bias) if m.bias is not None else None  # noqa: E731
    cache = lambda name: helper.make_tensor_value_info(name, f, [1, kv, "C", dh])  # noqa: E731
    for i in range(start, stop):
        layer = model.model.layers[i]
        p = f"layers.{i}"
        att, mlp = layer.self_attn, layer.mlp
        if i == start or kv_only:
            n = g.rms_norm(x, _np(layer.input_layernorm.weight), cfg.rms_norm_eps, f"{p}.input_layernorm.weight")
        else:  # the residual add of the layer before, fused with this layer's norm
            n, x = g.add_rms_norm(x, mlp_out, _np(layer.input_layernorm.weight), cfg.rms_norm_eps,
                                  f"{p}.input_layernorm.weight")
        projs = [att.k_proj, att.v_proj] if kv_only else [att.q_proj, att.k_proj, att.v_proj]
        weights, biases = [_np(m.weight) for m in projs], [bias(m) for m in projs]
        if gqa:
            # One kernel on the packed q/k/v [1, T, (H + 2 Hkv) * Dh]: RoPE on q and k, scores
            # against the cache and the new keys (causal, plus the bias), the softmax, and the
            # new K/V written into the cache buffers at n (past and present share memory, bound
            # by the caller).
            o = g.op("GroupQueryAttention", [g.packed(n, weights, biases, f"{p}.qkv"), "", "", f"past_k.{i}",
                                             f"past_v.{i}", "seqlens_k", "total_len", "cos", "sin", "pos", "bias"],
                     domain="com.microsoft", outputs=3, num_heads=h, kv_num_heads=kv, scale=scale,
                     do_rotary=1, rotary_interleaved=0)
            g.nodes[-1].output[1:] = [f"present_k.{i}", f"present_v.{i}"]
            inputs += [cache(f"past_k.{i}"), cache(f"past_v.{i}")]
            outputs += [cache(f"present_k.{i}"), cache(f"present_v.{i}")]
        else:
            outs = g.linears(n, weights, biases, f"{p}.qkv")
            q_lin, k_lin, v_lin = ([None] + outs) if kv_only else outs
            k_rot = _rope(g, k_lin, kv)  # [1, T, Hkv * Dh]
            k = g.op("Transpose", [g.op("Reshape", [k_rot, kv_shape])], perm=[0, 2, 1, 3])
            v = g.op("Transpose", [g.op("Reshape", [v_lin, kv_shape])], perm=[0, 2, 1, 3])
            g.nodes.append(helper.make_node("Identity", [k], [f"new_k.{i}"]))
            g.nodes.append(helper.make_node("Identity", [v], [f"new_v.{i}"]))
            outputs += [helper.make_tensor_value_info(f"new_k.{i}", f, [1, kv, "T", dh]),
                        helper.make_tensor_value_info(f"new_v.{i}", f, [1, kv, "T", dh])]
            if kv_only:
                continue
            inputs += [cache(f"past_k.{i}"), cache(f"past_v.{i}")]
            q = g.op("Transpose", [g.op("Reshape", [_rope(g, q_lin, h), q_shape])], perm=[0, 2, 1, 3])
            qg = g.op("Reshape", [q, grouped])  # [1, Hkv, g*T, Dh]
            # Scores against the cache and the new keys, masked, with one softmax over both.
            s_past = g.op("FusedMatMul", [qg, f"past_k.{i}"], domain="com.microsoft", transB=1, alpha=scale)
            s_new = g.op("FusedMatMul", [qg, k], domain="com.microsoft", transB=1, alpha=scale)
            s_past = g.op("Add", [s_past, mask_past])  # [1, Hkv, g*T, C]
            s_new = g.op("Add", [s_new, mask_new])  # [1, Hkv, g*T, T]
            top = g.op("Max", [g.op("ReduceMax", [s_past], axes=[-1], keepdims=1),
                               g.op("ReduceMax", [s_new], axes=[-1], keepdims=1)])
            e_past = g.op("Exp", [g.op("Sub", [s_past, top])])
            e_new = g.op("Exp", [g.op("Sub", [s_new, top])])
            axis = g.const(f"{p}.axis", np.array([-1], np.int64))
            z = g.op("Add", [g.op("ReduceSum", [e_past, axis], keepdims=1),
                             g.op("ReduceSum", [e_new, axis], keepdims=1)])
            o = g.op("Add", [g.op("MatMul", [e_past, f"past_v.{i}"]), g.op("MatMul", [e_new, v])])  # [1, Hkv, g*T, Dh]
            o = g.op("Div", [o, z])
            o = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [o, heads])], perm=[0, 2, 1, 3]), flat])
        n, x = g.add_rms_norm(x, g.linear(o, _np(att.o_proj.weight), bias(att.o_proj), f"{p}.o"),
                              _np(layer.post_attention_layernorm.weight), cfg.rms_norm_eps,
                              f"{p}.post_attention_layernorm.weight")
        gate, up = g.linears(n, [_np(mlp.gate_proj.weight), _np(mlp.up_proj.weight)],
                             [bias(mlp.gate_proj), bias(mlp.up_proj)], f"{p}.gate_up")
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
        mlp_out = g.linear(act, _np(mlp.down_proj.weight), bias(mlp.down_proj), f"{p}.down")
    if not kv_only:
        x = g.op("Add", [x, mlp_out])  # the last layer's residual (the next norm is in another graph)
        g.nodes.append(helper.make_node("Identity", [x], ["h_out"]))
        outputs.insert(0, helper.make_tensor_value_info("h_out", f, [1, "T", d]))
    graph = helper.make_graph(g.nodes, f"draftls_{'kv' if kv_only else 'layers'}_{start}_{stop}", inputs, outputs,
                              g.inits)
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])


def segments(cuts: list[int], n_layers: int) -> list[tuple[int, int]]:
    """Consecutive layer ranges split at the cuts (the exit layers)."""
    bounds = sorted({0, n_layers} | {c for c in cuts if 0 < c < n_layers})
    return list(zip(bounds[:-1], bounds[1:]))


def build_head(model: LlamaModel) -> onnx.ModelProto:
    """Final norm and LM head: h [1, T, D] -> logits [1, T, V]."""
    cfg = model.cfg
    g = _Graph()
    f = TensorProto.FLOAT
    n = g.rms_norm("h", _np(model.model.norm.weight), cfg.rms_norm_eps, "norm.weight")
    y = g.linear(n, _np(model.lm_head.weight), None, "lm_head")
    g.nodes.append(helper.make_node("Identity", [y], ["logits"]))
    graph = helper.make_graph(g.nodes, "draftls_head", [helper.make_tensor_value_info("h", f, [1, "T", cfg.hidden_size])],
                              [helper.make_tensor_value_info("logits", f, [1, "T", cfg.vocab_size])], g.inits)
    return helper.make_model(graph, ir_version=IR_VERSION,
                             opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])


def chain(parts: list[onnx.ModelProto], name: str, ends: list[int]) -> onnx.ModelProto:
    """One graph that runs layer graphs one after another: each one's `h_out` is the next one's
    `h`. Inputs of the same name (masks, RoPE, positions) are shared; every other name of part j
    gets the prefix `s{j}/`. Initializers keep their data, external references included.

    The residual stream between parts is an output too, `h_after.{ends[j]}` (the layer part j
    ends at), after the others: speculation reads the exit heads' layers from a full pass."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    inputs: dict[str, onnx.ValueInfoProto] = {}
    outputs: list[onnx.ValueInfoProto] = []
    last = len(parts) - 1
    for j, part in enumerate(parts):
        g = part.graph
        keep = {i.name for i in g.input} | {o.name for o in g.output}
        names = {k: k for k in keep}
        if j > 0:
            names["h"] = f"h_after.{ends[j - 1]}"  # the residual stream from the part before
        if j < last:
            names["h_out"] = f"h_after.{ends[j]}"
        rename = lambda t, j=j, names=names: "" if not t else names.get(t, f"s{j}/{t}")  # noqa: E731
        for x in g.input:
            if j == 0 or x.name != "h":
                inputs.setdefault(x.name, x)
        for o in g.output:
            if o.name != "h_out" or j == last:
                outputs.append(o)
        for t in g.initializer:
            t.name = rename(t.name)
            inits.append(t)
        for node in g.node:
            node.input[:] = [rename(t) for t in node.input]
            node.output[:] = [rename(t) for t in node.output]
            node.name = f"s{j}/{node.name}" if node.name else ""
            nodes.append(node)
    outputs.sort(key=lambda o: o.name != "h_out")  # h_out first, then the layers' K/V in order (stable)
    h_out = next(o for o in parts[-1].graph.output if o.name == "h_out")
    for end in ends[:-1]:
        state = onnx.ValueInfoProto()
        state.CopyFrom(h_out)
        state.name = f"h_after.{end}"
        outputs.append(state)
    graph = helper.make_graph(nodes, name, list(inputs.values()), outputs, inits)
    return helper.make_model(graph, ir_version=parts[0].ir_version, opset_imports=parts[0].opset_import)


def _save(proto: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def _block_format(quantize: str, graph: str) -> str:
    """The block format of a graph's products: int8 is Q8_0 throughout; int4 is Q4_1 in the
    layers and Q8_0 in the LM head, as in the default model's GGUF (see models/quantize.py)."""
    return "q8_0" if quantize == "int8" or graph == "head" else "q4_1"


def export(model: LlamaModel, out: Path, quantize: str = "none", cuts: list[int] | None = None,
           progress: Callable[[str], None] = lambda s: None, attention: str = "gqa") -> Path:
    """Write the graphs under out (with external weights) and return out: for every segment
    [a, b) between the cuts, `layers_a_b.onnx` (with this attention) and `kv_a_b.onnx`,
    `layers_0_N.onnx` (all of them chained) and `head.onnx`.

    Written to a temporary folder of its own first and renamed, so a half-written export is
    never used, and processes exporting the same model at once (servers starting together)
    do not write into each other's files: the first to finish wins, the others use its export.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}")
    t0 = time.perf_counter()
    n = model.cfg.num_layers
    segs = segments(cuts or [], n)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Dot-prefixed: the cache's pruning leaves it alone (models/loading.py, prune).
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        _write(model, tmp, quantize, segs, progress, attention, t0)
        shutil.rmtree(out, ignore_errors=True)
        try:
            tmp.rename(out)
        except OSError:
            if not (out / "export.json").is_file():
                raise
            log.info("another process finished the export %s first: using it", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s (%s) in %.0f s", out, quantize, time.perf_counter() - t0)
    return out


def _write(model: LlamaModel, tmp: Path, quantize: str, segs: list[tuple[int, int]],
           progress: Callable[[str], None], attention: str, t0: float) -> None:
    """Every graph of the export, and its export.json, into the folder tmp."""
    graphs: dict[str, Callable[[], onnx.ModelProto]] = {"head": lambda: build_head(model)}
    for a, b in segs:
        graphs[f"layers_{a}_{b}"] = lambda a=a, b=b: build_layers(model, a, b, attention=attention)
        graphs[f"kv_{a}_{b}"] = lambda a=a, b=b: build_layers(model, a, b, kv_only=True)
    for name, build in graphs.items():
        progress(f"building {name}.onnx")
        proto = build()
        if quantize != "none":
            progress(f"quantizing {name}.onnx ({quantize})")
            quantize_graph(proto, _block_format(quantize, name))
        _save(proto, tmp / f"{name}.onnx")
    n = model.cfg.num_layers
    if len(segs) > 1:
        # All layers in one graph, for plain decoding: one run a token instead of one a segment.
        # Its weights are the segments' files (referenced, not copied).
        progress(f"building layers_0_{n}.onnx")
        parts = [onnx.load(str(tmp / f"layers_{a}_{b}.onnx"), load_external_data=False) for a, b in segs]
        onnx.save_model(chain(parts, f"draftls_layers_0_{n}", [b for _, b in segs]),
                        str(tmp / f"layers_0_{n}.onnx"))
    import onnxruntime

    meta = {"format": FORMAT, "quantize": quantize, "attention": attention, "onnxruntime": onnxruntime.__version__,
            "segments": segs, "seconds": round(time.perf_counter() - t0, 1),
            "sha256": {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()}}
    (tmp / "export.json").write_text(json.dumps(meta))


def export_dir(root: Path, model_key: str, quantize: str, attention: str = "gqa") -> Path:
    """Where the export of one model, quantization, attention and ONNX Runtime version lives."""
    import onnxruntime

    return root / "onnx" / f"{model_key}-{quantize}-{attention}-ort{onnxruntime.__version__}-f{FORMAT}"


def is_complete(d: Path, cuts: list[int] | None, n_layers: int, attention: str = "gqa") -> bool:
    """True when d holds a finished export of this format and attention with the segments these
    cuts give."""
    try:
        meta = json.loads((d / "export.json").read_text())
    except (OSError, ValueError):
        return False
    segs = segments(cuts or [], n_layers)
    if not (meta.get("format") == FORMAT and meta.get("attention") == attention
            and [tuple(x) for x in meta.get("segments", [])] == segs
            and all((d / f"{k}_{a}_{b}.onnx").is_file() for a, b in segs for k in ("layers", "kv"))
            and (d / f"layers_0_{n_layers}.onnx").is_file()
            and (d / "head.onnx").is_file()):
        return False
    # Every file against its checksum: a corrupt graph or weights file is exported again.
    sums = meta.get("sha256")
    for name, digest in (sums.items() if isinstance(sums, dict) else [("", "")]):
        f = d / name
        if not name or not f.is_file() or sha256_file(f) != digest:
            log.warning("the ONNX export in %s fails its checksum (%s); exporting it again", d, name or "none")
            return False
    return True

