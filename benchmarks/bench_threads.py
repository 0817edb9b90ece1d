"""torch's threads beside ONNX Runtime on the CPU (models/threads.py): one, as shipped,
against the process's count (the behaviour before), through the engine, interleaved.

    .venv/bin/python benchmarks/bench_threads.py [--sites 12] [--rounds 2] [--drafts 1,3]

Requests complete lines of the standard library's `argparse.py` at sites after `self.`,
`parser.` and the like, with the default settings (monitors on) but no KV reuse, so every
request is alike whichever ran before it. For each site and draft count, both policies
run, in alternating order. Prints decode ms/token, the p50 of a request, and whether the
drafts are the same.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models.threads  # noqa: E402
from benchmarks.bench_core import machine  # noqa: E402
from decoding.engine import CompletionRequest, Engine  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from models.loading import load_model  # noqa: E402

SITES = ["        self.prog = ", "        self.formatter_class = ", "        formatter = self.",
         "        parser = self.", "        if action.", "        action = self.", "        for action in self.",
         "        args, argv = self.", "        self.exit(", "        namespace = ", "        self._",
         "        return self."]
"""Where the cursor goes: just after the first occurrence of each (the text before it is the document)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sites", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--drafts", default="1,3")
    args = p.parse_args()
    threads = torch.get_num_threads()
    loaded = load_model(backend="onnx")
    engine = Engine(loaded)
    shipped = models.threads.for_onnx_runtime

    def policy(name: str) -> None:
        if name == "one thread":
            models.threads.for_onnx_runtime = shipped
        else:  # before: torch keeps the process's threads beside ONNX Runtime
            models.threads.for_onnx_runtime = lambda: None
            torch.set_num_threads(threads)

    text = Path(argparse.__file__).read_text()
    docs = [text[: text.index(m) + len(m)] for m in SITES[: args.sites]]
    names = ["one thread", f"{threads} threads"]
    counts = args.drafts.split(",")
    rows = {(d, n): {"ms": [], "tokens": [], "total": [], "drafts": []} for d in counts for n in names}
    for r in range(args.rounds):
        for i, doc in enumerate(docs):
            for d in counts:
                s = Settings.from_dict({"drafts": int(d), "kvReuse": False})[0]
                for name in names if (i + r) % 2 == 0 else names[::-1]:
                    policy(name)
                    res = engine.complete(CompletionRequest(doc, len(doc), settings=s))
                    row = rows[(d, name)]
                    row["ms"].append(res.timings["decode_ms"])
                    row["tokens"].append(res.timings["generated_tokens"])
                    row["total"].append(res.timings["total_ms"])
                    row["drafts"].append([x.token_ids for x in res.drafts])
    policy("one thread")
    print(f"Command: `.venv/bin/python benchmarks/bench_threads.py --sites {args.sites} --rounds {args.rounds} "
          f"--drafts {args.drafts}`  ")
    print(f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. Model: smollm2-135m on ONNX Runtime "
          f"float32; {len(docs)} sites of `argparse.py` x {args.rounds} rounds, default settings, no KV reuse.\n")
    print("| drafts | torch threads beside ONNX Runtime | decode ms/token | request p50 ms | mean ms | same drafts |")
    print("|---|---|---|---|---|---|")
    for d in counts:
        one = rows[(d, names[0])]
        for name in names:
            row = rows[(d, name)]
            same = sum(a == b for a, b in zip(row["drafts"], one["drafts"]))
            print(f"| {d} | {name} | {sum(row['ms']) / max(1, sum(row['tokens'])):.1f} | "
                  f"{statistics.median(row['total']):.0f} | {statistics.mean(row['total']):.0f} | "
                  f"{same}/{len(one['drafts'])} |")


if __name__ == "__main__":
    main()
