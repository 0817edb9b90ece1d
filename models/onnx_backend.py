"""The ONNX Runtime backend: the exported graphs (models/onnx_export.py) behind the Backend interface.

The KV cache lives here, in one buffer per layer for K [1, Hkv, Dh, C] (transposed) and
for V [1, Hkv, C, Dh], with a fill length; the graph reads whole buffers (no copy: CPU tensors share numpy's memory)
and a mask hides the unfilled part, so rolling back is setting the length. Capacity
doubles when full. On CUDA (onnxruntime-gpu), the CUDAExecutionProvider runs the graphs;
the buffers are still host memory, copied in each call (I/O binding, to keep them on the
GPU, is not done yet).

Per-layer access (early exit, self-speculation) is not exported yet: `layered` is False,
and the engine then leaves those features off with a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.config import ModelConfig

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256


def available() -> bool:
    """True when onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def providers(device: str) -> list[str]:
    """The execution providers for a device (cuda only where onnxruntime-gpu sees a GPU)."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("device cuda asked for, but onnxruntime has no CUDA provider (%s): using the CPU", have)
    return ["CPUExecutionProvider"]


class OnnxBackend:
    """Backend over `layers.onnx` and `head.onnx` in `folder`; the embedding table is given."""

    name = "onnx"
    layered = False  # no per-layer segments: early exit and self-speculation stay off

    def __init__(self, folder: Path, config: ModelConfig, embed_weight: np.ndarray, device: str = "cpu",
                 threads: int | None = None):
        import onnxruntime as ort

        self.config = config
        self.exit_heads: dict[int, object] = {}
        self.exit_thresholds: dict[int, float] = {}
        self.shortlist = None
        self.embed_weight = np.ascontiguousarray(embed_weight, dtype=np.float32)  # [V, D]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = providers(device)
        self.layers = ort.InferenceSession(str(folder / "layers.onnx"), so, providers=self.providers)
        self.head = ort.InferenceSession(str(folder / "head.onnx"), so, providers=self.providers)
        self.cuda = self.providers[0] == "CUDAExecutionProvider"
        self.device = torch.device("cuda" if self.cuda else "cpu")
        inv_freq, self.rope_scale = config.inv_freq()
        self.inv_freq = inv_freq.numpy().astype(np.float64)
        self._n = 0
        self._alloc(256)

    # -- cache -------------------------------------------------------------------------------

    def _alloc(self, capacity: int) -> None:
        """(Re)allocate the buffers with room for `capacity` positions, keeping what is filled."""
        c = self.config
        old = (self.k, self.v) if hasattr(self, "k") else None
        # Keys transposed, [1, Hkv, Dh, C]: the graph's scores are then a plain matrix product.
        self.k = [np.zeros((1, c.num_kv_heads, c.head_dim, capacity), np.float32) for _ in range(c.num_layers)]
        self.v = [np.zeros((1, c.num_kv_heads, capacity, c.head_dim), np.float32) for _ in range(c.num_layers)]
        if old is not None and self._n:
            for i in range(c.num_layers):
                self.k[i][..., : self._n] = old[0][i][..., : self._n]
                self.v[i][:, :, : self._n] = old[1][i][:, :, : self._n]
        self.capacity = capacity

    @property
    def length(self) -> int:
        return self._n

    @property
    def batch(self) -> int:
        return 1

    def layer_lengths(self) -> list[int]:
        return [self._n] * self.config.num_layers

    def reset(self, batch: int = 1) -> None:
        if batch != 1:
            raise ValueError("the ONNX backend decodes one sequence (drafts go side by side in it)")
        self._n = 0

    def truncate(self, n: int) -> None:
        self._n = min(self._n, max(n, 0))

    def select(self, rows: Tensor) -> None:
        if rows.tolist() != [0]:
            raise ValueError("the ONNX backend keeps one sequence")

    # -- forward -------------------------------------------------------------------------------

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings: [B, T] -> [B, T, D]."""
        return torch.from_numpy(self.embed_weight[ids.cpu().numpy()])

    def _rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        freqs = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], -1)
        return ((np.cos(emb) * self.rope_scale).astype(np.float32), (np.sin(emb) * self.rope_scale).astype(np.float32))

    def _run(self, h: np.ndarray, positions: np.ndarray, past: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Layers on h [1, T, D]; `past` [T, n] and `new` [T, T] say which keys each token sees.
        Appends the new K/V; returns the output stream [1, T, D]."""
        t = h.shape[1]
        if self._n + t > self.capacity:
            self._alloc(max(2 * self.capacity, self._n + t))
        mask_past = np.full((t, self.capacity), -np.inf, np.float32)
        mask_past[:, : self._n] = np.where(past, 0.0, -np.inf)
        mask_new = np.where(new, 0.0, -np.inf).astype(np.float32)
        cos, sin = self._rope(positions)
        feed = {"h": np.ascontiguousarray(h, np.float32), "cos": cos, "sin": sin, "mask_past": mask_past, "mask_new": mask_new}
        for i in range(self.config.num_layers):
            feed[f"past_k.{i}"] = self.k[i]
            feed[f"past_v.{i}"] = self.v[i]
        out = self.layers.run(None, feed)
        n = self._n
        for i in range(self.config.num_layers):
            self.k[i][..., n : n + t] = out[1 + 2 * i].transpose(0, 1, 3, 2)
            self.v[i][:, :, n : n + t] = out[2 + 2 * i]
        self._n = n + t
        return out[0]

    def _causal(self, h: np.ndarray) -> np.ndarray:
        t = h.shape[1]
        positions = np.arange(self._n, self._n + t)
        return self._run(h, positions, np.ones((t, self._n), bool), np.tril(np.ones((t, t), bool)))

    def _logits(self, h: np.ndarray) -> Tensor:
        return torch.from_numpy(self.head.run(None, {"h": np.ascontiguousarray(h, np.float32)})[0])

    @torch.inference_mode()
    def step(self, ids: Tensor | None = None, embeds: Tensor | None = None) -> Tensor:
        """Extend the cache by ids [1, T] (or embeds [1, T, D]); logits [1, T, V]."""
        h = self.embed(ids) if embeds is None else embeds
        return self._logits(self._causal(h.float().cpu().numpy()))

    @torch.inference_mode()
    def step_tree(self, ids: Tensor, positions: Tensor, visible: Tensor) -> Tensor:
        """Append ids [1, T] at `positions` [T], token i seeing the keys `visible` [T, length + T] marks."""
        n = self._n
        vis = visible.cpu().numpy().astype(bool)
        h = self.embed(ids).numpy()
        return self._logits(self._run(h, positions.cpu().numpy(), vis[:, :n], vis[:, n:]))

    @torch.inference_mode()
    def prefill(self, ids: Tensor, all_logits: bool = False) -> Tensor:
        """Extend the cache by ids [1, T] in chunks; logits [1, 1, V] (or [1, T, V])."""
        if ids.shape[1] == 0:
            raise ValueError("prefill needs at least one token")
        outs = []
        h = None
        for i in range(0, ids.shape[1], PREFILL_CHUNK):
            h = self._causal(self.embed(ids[:, i : i + PREFILL_CHUNK]).numpy())
            if all_logits:
                outs.append(self._logits(h))
        if all_logits:
            return torch.cat(outs, dim=1)
        assert h is not None
        return self._logits(h[:, -1:])

    def run_layers(self, h: Tensor, start: int, stop: int) -> Tensor:
        raise NotImplementedError("per-layer access is not exported for ONNX Runtime yet")

    def exit_logits(self, h: Tensor, layer: int) -> Tensor:
        if layer != self.config.num_layers:
            raise NotImplementedError("exit heads are not exported for ONNX Runtime yet")
        return self._logits(h.float().cpu().numpy())

    def draft_logits(self, h: Tensor, layer: int) -> Tensor:
        return self.exit_logits(h, layer)

    def fill_kv(self, h: Tensor, start: int, stop: int) -> None:
        raise NotImplementedError("per-layer access is not exported for ONNX Runtime yet")
