"""Tune superposed decoding's alpha (n-gram weight) and temperature on dev-set cases.

    .venv/bin/python benchmarks/tune_superposed.py [--limit 15] [--alphas 0,0.3,0.54,0.8] \
        [--temperatures 0.06,0.3,1]

Runs `decoder: superposed` with 3 drafts over the first --limit cases of each kind, once per
(alpha, temperature), on one engine (the cache and the n-gram tables are shared), and prints
exact match of the top draft and of any draft, deref identifier match, and how many distinct
drafts came back. The chosen values are SuperposedConfig's defaults; BENCHMARKS.md has the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import machine  # noqa: E402
from benchmarks.run_devset import first_of_each_kind  # noqa: E402
from decoding.engine import Engine  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from lsp.batch import load_cases, run_batch  # noqa: E402
from models.loading import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, default=ROOT / "benchmarks" / "devset.jsonl")
    p.add_argument("--workspace", type=Path, default=ROOT / "benchmarks" / "workspace")
    p.add_argument("--limit", type=int, default=15, help="first N cases of each kind")
    p.add_argument("--alphas", default="0,0.3,0.54,0.8")
    p.add_argument("--temperatures", default="0.06,0.3,1")
    args = p.parse_args()
    cases, _ = load_cases(args.cases.read_text(encoding="utf-8").splitlines())
    kept = first_of_each_kind(cases, args.limit)
    engine = Engine(load_model())
    engine.ngram_table(wait=True)
    settings = Settings.from_dict({"drafts": 3, "decoder": "superposed"})[0]
    print(f"Command: `.venv/bin/python benchmarks/tune_superposed.py --limit {args.limit} --alphas {args.alphas} "
          f"--temperatures {args.temperatures}`  ")
    print(f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. {len(kept)} cases.\n")
    print("| alpha | temperature | exact top | exact any of 3 | deref ident any | distinct drafts |")
    print("|---|---|---|---|---|---|")
    for alpha in [float(a) for a in args.alphas.split(",")]:
        for temp in [float(t) for t in args.temperatures.split(",")]:
            engine.superposed_cfg = dataclasses.replace(engine.superposed_cfg, alpha=alpha, temperature=temp)
            engine.last = None
            out = io.StringIO()
            s = run_batch(engine, kept, settings, args.workspace.resolve(), out, False, None)
            records = [json.loads(line) for line in out.getvalue().splitlines()]
            top, any_ = s["all"]["exact_top"], s["all"]["exact_any"]
            ident = s.get("deref", {}).get("ident_any", float("nan"))
            distinct = sum(len({d["text"] for d in r["drafts"]}) for r in records) / len(records)
            print(f"| {alpha} | {temp} | {top:.1%} | {any_:.1%} | {ident:.1%} | {distinct:.2f} |", flush=True)


if __name__ == "__main__":
    main()
