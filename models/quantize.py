"""Block quantization of an ONNX graph's weight products, in llama.cpp's block formats.

Every `MatMul` whose B is a constant [K, N] becomes ONNX Runtime's `MatMulNBits` over blocks of
32 along K (activations quantized per block at accuracy level 4: its int8 kernels):

- `q8_0`: 8 bits, symmetric, one scale a block: w = d * q, q in [-127, 127].
- `q4_1`: 4 bits with a scale and a minimum a block: w = d * q + m, q in [0, 15]. MatMulNBits
  takes integer zero points only, and m is rarely a multiple of d, so the kernel runs the
  symmetric form d * (q - 8) and the rest, (m + 8d) times the sum of x over the block, is one
  small float product beside it: x [.., K] -> block sums [.., K/32] @ R [K/32, N]. That is
  llama.cpp's own Q4_1 dot product.

The default model ships as a GGUF whose layers are Q4_1 and whose embedding (the tied LM head)
is Q8_0; our float32 weights are their dequantized copy. Quantizing them again in the same
format gives back the file's exact blocks (a block's minimum and maximum are on its grid), so
`int4` here runs the very weights llama.cpp runs, rather than rounding them a second time.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

BLOCK = 32
ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations per block (its fast kernels); 1 computes in float32


def _blocks(w: np.ndarray) -> np.ndarray:
    """[K, N] -> [N, K/32, 32]: the blocks MatMulNBits reads (along K, per output column)."""
    k, n = w.shape
    return np.ascontiguousarray(w.T, dtype=np.float32).reshape(n, k // BLOCK, BLOCK)


def _inverse(d: np.ndarray) -> np.ndarray:
    return np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)


def q8_0(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of w [K, N] -> (q + 128 as uint8 [N, K/32, 32], d [N, K/32])."""
    b = _blocks(w)
    d = np.abs(b).max(-1) / 127
    q = np.clip(np.rint(b * _inverse(d)[..., None]), -127, 127)
    return (q + 128).astype(np.uint8), d.astype(np.float32)


def q4_1(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks of w [K, N] -> (q [N, K/32, 32] in 0..15, d [N, K/32], m [N, K/32])."""
    b = _blocks(w)
    m = b.min(-1)
    d = (b.max(-1) - m) / 15
    q = np.clip(np.rint((b - m[..., None]) * _inverse(d)[..., None]), 0, 15)
    return q.astype(np.uint8), d.astype(np.float32), m.astype(np.float32)


def dequantize(w: np.ndarray, fmt: str) -> np.ndarray:
    """The float [K, N] that the quantized product multiplies by (for tests and error bounds)."""
    k, n = w.shape
    if fmt == "q8_0":
        q, d = q8_0(w)
        b = (q.astype(np.float32) - 128) * d[..., None]
    else:
        q4, d, m = q4_1(w)
        b = q4.astype(np.float32) * d[..., None] + m[..., None]
    return b.reshape(n, k).T


def quantize_graph(model: onnx.ModelProto, fmt: str, accuracy_level: int = ACCURACY_LEVEL) -> onnx.ModelProto:
    """Replace, in place, every MatMul by a constant [K, N] (K a multiple of 32) with its `fmt`
    ("q8_0" or "q4_1") block-quantized product; returns the model."""
    if fmt not in ("q8_0", "q4_1"):
        raise ValueError(f"unknown block format {fmt!r}")
    g = model.graph
    consts = {t.name: t for t in g.initializer}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    used: set[str] = set()
    for node in g.node:
        w_name = node.input[1] if node.op_type == "MatMul" else ""
        w = numpy_helper.to_array(consts[w_name]) if w_name in consts else None
        if w is None or w.ndim != 2 or w.shape[0] % BLOCK:
            nodes.append(node)
            if w is not None:
                log.debug("%s stays float32 (shape %s)", w_name, w.shape)
            continue
        used.add(w_name)
        k, n = w.shape
        x, y = node.input[0], node.output[0]
        nbits = {"K": k, "N": n, "block_size": BLOCK, "accuracy_level": accuracy_level}

        def const(suffix: str, value: np.ndarray) -> str:
            added.append(numpy_helper.from_array(np.ascontiguousarray(value), w_name + suffix))
            return w_name + suffix

        if fmt == "q8_0":
            q, d = q8_0(w)
            nodes.append(helper.make_node("MatMulNBits", [x, const(".q8", q), const(".d", d)], [y],
                                          name=node.name, domain="com.microsoft", bits=8, **nbits))
            continue
        q, d, m = q4_1(w)
        packed = q[..., 0::2] | (q[..., 1::2] << 4)  # [N, K/32, 16]: two per byte, the first low
        main, sums, rest = (f"{y}.{s}" for s in ("q", "sums", "rest"))
        ones = f"block_sums.{k}"  # [K, K/32], one a graph for each K
        if ones not in consts:
            consts[ones] = numpy_helper.from_array(
                np.kron(np.eye(k // BLOCK, dtype=np.float32), np.ones((BLOCK, 1), np.float32)), ones)
            added.append(consts[ones])
        nodes += [
            # Symmetric 4-bit (implicit zero point 8): d * (q - 8).
            helper.make_node("MatMulNBits", [x, const(".q4", packed), const(".d", d)], [main],
                             name=node.name, domain="com.microsoft", bits=4, **nbits),
            # The rest of each block, (m + 8d) * sum(x over the block): x @ ones [K, K/32] gives the
            # block sums (one small product: fewer kernel calls than a reshape and a sum), @ R [K/32, N].
            helper.make_node("MatMul", [x, ones], [sums]),
            helper.make_node("MatMul", [sums, const(".r", (m + 8 * d).T)], [rest]),
            helper.make_node("Add", [main, rest], [y]),
        ]
    kept = [t for t in g.initializer if t.name not in used]
    del g.initializer[:]
    g.initializer.extend(kept + added)
    del g.node[:]
    g.node.extend(nodes)
    return model
