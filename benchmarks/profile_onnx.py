"""Where ONNX Runtime's decode time goes: Python against ONNX Runtime, and the layers' operators.

    .venv/bin/python benchmarks/profile_onnx.py [--quantize none|int8|int4] [--steps 40]

After a 512-token prompt of `argparse.py`, decodes `--steps` tokens twice on the default model:
once under cProfile (the share of the step spent inside ONNX Runtime's `run`), and once with
ONNX Runtime's profiler on the graph of all layers (time per operator type, and the executor's
time around the kernels). Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import datetime
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import code_ids, machine  # noqa: E402
from models.loading import load_model, to_onnx  # noqa: E402
from models.onnx_backend import OnnxBackend  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quantize", choices=["none", "int8", "int4"], default="none")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    import onnxruntime as ort

    loaded = to_onnx(load_model(), "cpu", args.quantize)
    b = loaded.backend
    assert isinstance(b, OnnxBackend)
    prompt = torch.tensor([code_ids(loaded.tokenizer, 512)])

    def steps() -> None:
        for i in range(args.steps):
            b.step(torch.tensor([[100 + i]]))

    def decode() -> float:
        b.reset()
        b.prefill(prompt)
        t = time.perf_counter()
        steps()
        return (time.perf_counter() - t) / args.steps * 1000

    plain_ms = min(decode() for _ in range(2))  # warm, then timed without any profiler
    b.reset()
    b.prefill(prompt)
    prof = cProfile.Profile()
    prof.enable()
    steps()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    in_ort = sum(v[3] for k, v in stats.items() if "onnxruntime_pybind11_state.run" in k[2])  # cumulative s
    total = sum(v[3] for k, v in stats.items() if k[2] == "steps")

    seg = (0, b.config.num_layers)  # plain decoding's graph: all layers
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.use_per_session_threads = False
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "ort")
        plain = b.layers[seg]
        b.layers[seg] = ort.InferenceSession(str(b.folder / f"layers_{seg[0]}_{seg[1]}.onnx"), so,
                                             providers=b.providers)
        decode()
        events = json.loads(Path(b.layers[seg].end_profiling()).read_text())
        b.layers[seg] = plain
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    steps = runs[-args.steps:]  # the decode steps (the prefill's chunks come first)
    by_op: dict[str, float] = collections.defaultdict(float)
    nodes: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= steps[0][0]:
            by_op[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    n_runs = len(steps)
    per_step = sum(d for _, d in steps) / n_runs
    kernels = sum(by_op.values()) / n_runs
    today = datetime.date.today().isoformat()
    q = f" --quantize {args.quantize}" if args.quantize != "none" else ""
    print(f"Command: `.venv/bin/python benchmarks/profile_onnx.py --steps {args.steps}{q}`  ")
    print(f"Machine: {machine()}, onnxruntime {ort.__version__}. Date: {today}.  ")
    label = "float32" if args.quantize == "none" else args.quantize
    print(f"Model: smollm2-135m, ONNX Runtime {label}, all layers in one graph.\n")
    print(f"- Decode: {plain_ms:.1f} ms/token (no profiler). Under cProfile, {100 * in_ort / total:.0f}% of a "
          f"step is inside ONNX Runtime's run; Python around it costs {(total - in_ort) / args.steps * 1000:.2f} ms/token.")
    print(f"- Layers {seg} under ONNX Runtime's profiler, which slows it: "
          f"{per_step / 1000:.2f} ms per decode step, of which kernels {kernels / 1000:.2f} ms; the rest is the "
          "executor between them.\n")
    print("| operator | us per step | nodes per step |")
    print("|---|---|---|")
    for op, d in sorted(by_op.items(), key=lambda x: -x[1]):
        print(f"| {op} | {d / n_runs:.0f} | {nodes[op] // n_runs} |")


if __name__ == "__main__":
    main()
