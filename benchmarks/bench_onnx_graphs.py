"""ONNX Runtime decode through one graph of all layers against the export's segments.

    .venv/bin/python benchmarks/bench_onnx_graphs.py [--quantize none,int8,int4] [--contexts 512,1500] [--rounds 8]

Plain decoding runs `layers_0_N.onnx`, the segments chained in one graph (export format 8);
early exit and speculation run the segments, one ONNX Runtime call each. For each
quantization, two backends on the same export decode side by side, one of them switched to
the segments: after a prompt of each context length (`argparse.py`), 16 greedy steps a round,
the two alternating round by round. Checks that both give the same logits, and prints a
Markdown table of the median ms/token and the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import code_ids, machine  # noqa: E402
from models.loading import load_model, to_onnx  # noqa: E402
from models.onnx_backend import OnnxBackend  # noqa: E402

STEPS = 16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quantize", default="none,int8,int4")
    p.add_argument("--contexts", default="512,1500")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    loaded = load_model()
    rows = []
    for q in args.quantize.split(","):
        # Two backends on the same export (the second load reads it from the cache).
        whole, split = (to_onnx(loaded, "cpu", q, print).backend for _ in range(2))
        assert isinstance(whole, OnnxBackend) and isinstance(split, OnnxBackend)
        split.prepare_partial()  # the segments, as early exit and speculation run them
        for ctx in (int(c) for c in args.contexts.split(",")):
            prompt = torch.tensor([code_ids(loaded.tokenizer, ctx)])
            logits = []
            for b in (split, whole):
                b.reset()
                logits.append(b.prefill(prompt))
            if (logits[0] - logits[1]).abs().max().item() > 1e-3:
                raise SystemExit(f"{q}: the one graph and the segments disagree")
            n = whole.length
            ms: dict[str, list[float]] = {"segments": [], "one graph": []}
            for _ in range(args.rounds):
                for name, b in (("segments", split), ("one graph", whole)):
                    b.truncate(n)
                    t = time.perf_counter()
                    for i in range(STEPS):
                        b.step(torch.tensor([[100 + i]]))
                    ms[name].append((time.perf_counter() - t) / STEPS * 1000)
            a, o = statistics.median(ms["segments"]), statistics.median(ms["one graph"])
            rows.append(f"| {q} | {ctx} | {a:.1f} | {o:.1f} | {a / o:.2f}x |")
        del whole, split
    print(f"Command: `.venv/bin/python benchmarks/bench_onnx_graphs.py --quantize {args.quantize} "
          f"--contexts {args.contexts} --rounds {args.rounds}`  ")
    print(f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}.  ")
    print(f"Model: smollm2-135m; {STEPS} greedy steps a round after the prompt, medians of {args.rounds} "
          "interleaved rounds.\n")
    print("| quantize | cached tokens | segments ms/token | one graph ms/token | one graph faster by |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
