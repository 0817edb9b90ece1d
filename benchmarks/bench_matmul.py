"""Few-row matrix products on this CPU: MKL's `W @ x^T` against oneDNN's prepacked linear.

    .venv/bin/python benchmarks/bench_matmul.py [--repeats 12]

A pass of T tokens multiplies every weight matrix by T columns. This times that for T = 1
to 8 over the weight shapes of 30 SmolLM2 layers (q, gate, down, k: 265 MB of distinct
float32 weights, so nothing stays in cache), with two kernels: torch.mm(W, x.t()) (MKL,
what `models.llama.linear` uses for few rows) and oneDNN's linear on weights prepacked
once. Prints a Markdown table of the best time per kernel and T.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import machine  # noqa: E402

SHAPES = [(576, 576), (1536, 576), (576, 1536), (192, 576)]  # [out, in] of q, gate, down, k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=12)
    args = p.parse_args()
    torch.manual_seed(0)
    weights = [torch.randn(n, k) for _ in range(30) for n, k in SHAPES]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
    kernels: dict[str, Callable[[int, torch.Tensor], torch.Tensor]] = {
        "MKL `W @ x^T`": lambda i, x: torch.mm(weights[i], x.t()),
        "oneDNN prepacked": lambda i, x: torch.ops.mkldnn._linear_pointwise(x, packed[i], None, "none", [], ""),
    }
    columns = (1, 2, 3, 4, 6, 8)
    best: dict[tuple[str, int], float] = {}
    for t in columns:
        xs = {k: torch.randn(t, k) for k in (576, 1536)}
        for _ in range(args.repeats):
            for name, f in kernels.items():  # interleaved, so drift hits both alike
                t0 = time.perf_counter()
                for i, w in enumerate(weights):
                    f(i, xs[w.shape[1]])
                ms = (time.perf_counter() - t0) * 1000
                best[name, t] = min(best.get((name, t), ms), ms)
    mb = sum(w.numel() for w in weights) * 4 / 1e6
    print(f"Command: `.venv/bin/python benchmarks/bench_matmul.py --repeats {args.repeats}`  ")
    print(f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. Weights: {mb:.0f} MB float32, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}.\n")
    print("| kernel | " + " | ".join(f"{t} column{'s' if t > 1 else ''}" for t in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in kernels:
        print(f"| {name} | " + " | ".join(f"{best[name, t]:.1f} ms" for t in columns) + " |")


if __name__ == "__main__":
    main()
