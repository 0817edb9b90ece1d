"""What one forward pass costs with 1 to 8 tokens side by side, on the default model.

    .venv/bin/python benchmarks/bench_passes.py [--context 1500] [--repeats 30]

After a prompt of --context tokens (real code: the standard library's `argparse.py`), times
one pass of T tokens as drafts decoded together make it (`step_tree`: T drafts, each seeing
the prompt and itself), one plain one-token step, and one superposed step (`step(embeds=)`),
interleaved round by round so that drift hits them alike. Prints a Markdown table with the
median ms and the ratio to the one-token step. This is what decides whether k drafts decoded
together cost more than superposed decoding's single pass. Two more rows run the plain step
and the 3-token tree step with q/k/v and gate/up as separate products, to show what fusing
them (`models.llama.Fused`) saves.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import machine  # noqa: E402
from models.loading import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--context", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    loaded = load_model()
    b = loaded.backend
    text = (Path(__import__("argparse").__file__)).read_text()
    ids = loaded.tokenizer.encode(text)[: args.context]
    b.reset(1)
    b.prefill(torch.tensor([ids]))
    n = b.length

    def tree(t: int) -> Callable[[], None]:
        def run() -> None:
            b.step_tree(torch.tensor([[100 + i for i in range(t)]]), torch.full((t,), n),
                        torch.cat([torch.ones(t, n, dtype=torch.bool), torch.eye(t, dtype=torch.bool)], 1))
            b.truncate(n)
        return run

    def step() -> None:
        b.step(torch.tensor([[100]]))
        b.truncate(n)

    def superposed() -> None:
        e = b.embed(torch.tensor([[100, 101, 102]]))[0]
        b.step(embeds=(e * torch.tensor([[0.5], [0.3], [0.2]])).sum(0).view(1, 1, -1))
        b.truncate(n)

    from models.llama import Fused

    fused_call = Fused.__call__

    def separate(f: Callable[[], None]) -> Callable[[], None]:
        """f with q/k/v and gate/up as separate products (as before they were fused)."""
        def run() -> None:
            Fused.__call__ = lambda self, x: [p(x) for p in self.parts]  # type: ignore[method-assign]
            try:
                f()
            finally:
                Fused.__call__ = fused_call  # type: ignore[method-assign]
        return run

    runs: dict[str, Callable[[], None]] = {"plain step, 1 token": step, "superposed step (3 drafts)": superposed}
    runs |= {"plain step, 1 token, separate q/k/v and gate/up products": separate(step),
             "3 drafts together (tree step, T=3), separate products": separate(tree(3))}
    runs |= {f"{t} drafts together (tree step, T={t})": tree(t) for t in (1, 2, 3, 4, 6, 8)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for f in runs.values():
        f()  # warm up
    for _ in range(args.repeats):
        for name, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t0) * 1000)
    # Superposed decoding's per-request n-gram table of the open document (here argparse.py).
    from decoding.ngram import NgramTable

    builds = []
    for _ in range(5):
        t0 = time.perf_counter()
        doc = loaded.tokenizer.hf.encode(text, add_special_tokens=False).ids
        NgramTable.build(np.asarray(doc), loaded.backend.config.vocab_size)
        builds.append((time.perf_counter() - t0) * 1000)
    base = statistics.median(times["plain step, 1 token"])
    print(f"Command: `.venv/bin/python benchmarks/bench_passes.py --context {args.context} --repeats {args.repeats}`  ")
    print(f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. Cache: {n} tokens.\n")
    print("| pass | median ms | ratio to one plain step |")
    print("|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.1f} | {m / base:.2f} |")
    print(f"\nThe open document's n-gram table (orders 2-6) for `argparse.py` ({len(text.splitlines())} lines, "
          f"{len(doc)} tokens): {statistics.median(builds):.0f} ms to tokenize and build (median of 5).")


if __name__ == "__main__":
    main()
