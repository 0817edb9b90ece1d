"""torch's thread count beside ONNX Runtime on the CPU.

After each run, ONNX Runtime's pool threads spin for a while on the cores. torch work in
that time (the decoders' masks, softmax and top-k over the 49k-token vocabulary) is split
over torch's threads, and the second one then waits for a core, up to a scheduler slice:
about 24 ms, against a step of 20 (BENCHMARKS.md, issue 8). One torch thread runs those
small vector ops in microseconds. So the backend that runs decides torch's threads: one
while ONNX Runtime runs on the CPU, and the count from before for the torch backend.
"""

from __future__ import annotations

import torch

_before: int | None = None  # torch's threads before an ONNX Runtime backend took them down to one


def for_onnx_runtime() -> None:
    """One torch thread while ONNX Runtime's pool holds the cores."""
    global _before
    n = torch.get_num_threads()
    if n != 1:
        _before = n
        torch.set_num_threads(1)


def for_torch() -> None:
    """Give the torch backend back the threads that `for_onnx_runtime` took."""
    global _before
    if _before is not None:
        if torch.get_num_threads() == 1:
            torch.set_num_threads(_before)
        _before = None


def configured() -> int:
    """torch's threads as the process set them, before any ONNX Runtime backend ran."""
    return _before or torch.get_num_threads()
