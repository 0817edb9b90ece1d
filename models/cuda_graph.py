"""Decoding steps replayed as CUDA graphs (torch backend on a GPU).

A step of a 135M model on a GPU launches some 600 small kernels, one Python call each, so
eager decoding is bound by the host: about 60 times the GPU's weight-read floor on an H100
(BENCHMARKS.md, issue 8). A CUDA graph records those launches once and replays them in one
call. It needs fixed shapes and addresses, so a captured step (`LlamaModel.run_fixed`) reads
the whole cache buffer, with the unfilled tail masked, and takes its positions and mask as
device tensors that are refilled before each replay.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.llama import KVCache, LlamaModel


class CapturedStep:
    """One step of T tokens for B rows, captured over one set of cache buffers (capacity C)."""

    def __init__(self, model: LlamaModel, cache: KVCache, h: Tensor, slots: Tensor, positions: Tensor,
                 visible: Tensor):
        dev = h.device
        self.h = h.clone()  # [B, T, D]
        self.slots = slots.to(dev, copy=True)  # [T] cache slots
        self.positions = positions.to(dev, copy=True)  # [T] rotary positions
        self.visible = visible.to(dev, copy=True)  # [T, C]
        # Warm up on a side stream first (cuBLAS workspaces, lazily fused weights). The warm-up
        # writes this step's own keys and values into its free slots, which the replay rewrites.
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            model.run_fixed(self.h, self.slots, self.positions, self.visible, cache)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: work that other threads put on the GPU meanwhile does not break the capture.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = model.run_fixed(self.h, self.slots, self.positions, self.visible, cache)  # [B, T, V]

    def __call__(self, h: Tensor, slots: Tensor, positions: Tensor, visible: Tensor) -> Tensor:
        """Refill the inputs, replay, and return a copy of the logits [B, T, V]."""
        self.h.copy_(h)
        self.slots.copy_(slots)
        self.positions.copy_(positions)
        self.visible.copy_(visible)
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites `out`
