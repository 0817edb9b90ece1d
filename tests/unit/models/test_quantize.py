"""Block quantization of the ONNX graphs' products (models/quantize.py), run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import torch
import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from models.loading import LoadedModel  # noqa: E402
from models.onnx_backend import _global_threads  # noqa: E402
from models.quantize import dequantize, q4_1, q8_0, quantize_graph  # noqa: E402

K, N = 96, 40


def _matmul_graph(w: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", w.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", w.shape[1]])
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("com.microsoft", 1)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    # As the backend's sessions: on the process's shared thread pool (once it exists, ONNX
    # Runtime refuses sessions with pools of their own).
    _global_threads(torch.get_num_threads())
    so = ort.SessionOptions()
    so.use_per_session_threads = False
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _q4_1_grid(rng: np.random.Generator) -> np.ndarray:
    """Weights that are Q4_1 blocks, as a GGUF's dequantized layers are (float16 d and m)."""
    q = rng.integers(0, 16, (N, K // 32, 32)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15  # llama.cpp's blocks span their grid: min -> 0, max -> 15
    d = rng.uniform(0.001, 0.02, (N, K // 32, 1)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.15, 0.0, (N, K // 32, 1)).astype(np.float16).astype(np.float32)
    return (q * d + m).reshape(N, K).T.copy()


def test_q4_1_gives_back_a_gguf_block_exactly() -> None:
    """Weights on a Q4_1 grid come back as the same blocks; the graph multiplies by exactly them."""
    rng = np.random.default_rng(0)
    w = _q4_1_grid(rng)
    q, d, m = q4_1(w)
    assert q.min() == 0 and q.max() == 15
    np.testing.assert_allclose(dequantize(w, "q4_1"), w, rtol=0, atol=1e-7)
    x = rng.standard_normal((1, 5, K)).astype(np.float32)
    # Accuracy level 1 computes in float32: only the weights' representation is under test.
    y = _run(quantize_graph(_matmul_graph(w), "q4_1", accuracy_level=1), x)
    np.testing.assert_allclose(y, x @ w, rtol=0, atol=2e-5)
    # Without the block minima's product the same kernel is off by far more.
    no_rest = quantize_graph(_matmul_graph(w), "q4_1", accuracy_level=1)
    no_rest.graph.node[-1].op_type = "Sub"  # main - rest instead of main + rest
    assert np.abs(_run(no_rest, x) - x @ w).max() > 0.1


def test_q8_0_gives_back_a_gguf_block_exactly() -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (N, K // 32, 32)).astype(np.float32)
    q[..., 0] = 127
    d = rng.uniform(1e-4, 1e-3, (N, K // 32, 1)).astype(np.float16).astype(np.float32)
    w = (q * d).reshape(N, K).T.copy()
    np.testing.assert_allclose(dequantize(w, "q8_0"), w, rtol=0, atol=1e-8)
    x = rng.standard_normal((1, 3, K)).astype(np.float32)
    y = _run(quantize_graph(_matmul_graph(w), "q8_0", accuracy_level=1), x)
    np.testing.assert_allclose(y, x @ w, rtol=0, atol=2e-5)


@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_any_weights_round_to_their_block_grid(fmt: str) -> None:
    """Weights off any grid round to the nearest step (at most half a step off), and the int8
    kernel (accuracy level 4, activations in int8 blocks) stays close to that product."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((K, N)).astype(np.float32) * 0.05
    deq = dequantize(w, fmt)
    blocks = w.T.reshape(N, K // 32, 32)
    step = (np.ptp(blocks, -1) / 15 if fmt == "q4_1" else np.abs(blocks).max(-1) / 127)
    err = np.abs(deq - w).T.reshape(N, K // 32, 32).max(-1)
    assert (err <= step / 2 + 1e-7).all() and err.max() > 0
    x = rng.standard_normal((1, 4, K)).astype(np.float32)
    exact = _run(quantize_graph(_matmul_graph(w), fmt, accuracy_level=1), x)
    np.testing.assert_allclose(exact, x @ deq, rtol=0, atol=2e-5)
    fast = _run(quantize_graph(_matmul_graph(w), fmt), x)
    assert np.abs(fast - exact).max() < 0.02 * np.abs(exact).max()


def test_only_constant_products_with_whole_blocks_are_quantized() -> None:
    w = np.ones((K + 8, N), np.float32)  # K not a multiple of 32: stays float32
    model = quantize_graph(_matmul_graph(w), "q4_1")
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    model = quantize_graph(_matmul_graph(np.ones((K, N), np.float32)), "q8_0")
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits"]
    assert [t.name for t in model.graph.initializer] == ["w.q8", "w.d"]  # the float weights are gone
    with pytest.raises(ValueError):
        quantize_graph(model, "q2_k")


@pytest.mark.model
def test_int4_runs_the_default_models_own_gguf_blocks(smol: LoadedModel) -> None:
    """The default model's layers are Q4_1 in its GGUF: quantizing their dequantized copy gives
    back the file's blocks (the same 4-bit values, the same scales and minima)."""
    import gguf

    from models.registry import DEFAULT_MODEL, WHEEL_MODELS, wheel_file

    reader = gguf.GGUFReader(str(wheel_file(*WHEEL_MODELS[DEFAULT_MODEL])))
    tensor = next(t for t in reader.tensors if t.name == "blk.3.ffn_down.weight")
    assert tensor.tensor_type.name == "Q4_1"
    raw = np.asarray(tensor.data, np.uint8).reshape(-1, 20)  # a block: d, m (float16), 16 bytes of nibbles
    d_file = raw[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]
    m_file = raw[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0]
    nib = raw[:, 4:]
    q_file = np.concatenate([nib & 0x0F, nib >> 4], axis=1)  # ggml: low nibbles first, then high

    w = smol.backend.model.model.layers[3].mlp.down_proj.weight.detach().float().numpy()  # [N, K]
    q, d, m = q4_1(w.T)  # blocks [N, K/32, ...], in the file's order (rows, then blocks)
    assert np.array_equal(q.reshape(-1, 32), q_file)
    np.testing.assert_allclose(d.reshape(-1), d_file, rtol=1e-5, atol=0)
    np.testing.assert_allclose(m.reshape(-1), m_file, rtol=1e-5, atol=1e-9)
