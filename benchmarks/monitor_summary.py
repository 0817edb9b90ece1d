"""The monitors table of BENCHMARKS.md from run_devset.py results: quality and monitor cost.

    .venv/bin/python benchmarks/run_devset.py --configs greedy,greedy-no-monitors,greedy-no-affinity --out /tmp/dev
    .venv/bin/python benchmarks/monitor_summary.py /tmp/dev:greedy,greedy-no-monitors,greedy-no-affinity

Per configuration and kind of case (deref, line, both): exact match (top, any draft), edit
similarity, deref identifier match (top, any), empty answers, request latency p50/p90,
decode ms per generated token (all decode time over all tokens), the monitors' share of
decode time, and their triggers and step-asides (jedi could not decide).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding.metrics import percentile  # noqa: E402

HEADER = ("| config | kind | cases | exact top | exact any | edit sim | ident top | ident any | empty | p50 ms "
          "| p90 ms | decode ms/token | monitor ms / decode ms | triggers | stepped aside |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def share(rows: list[dict], key: str) -> str:
    return f"{100 * sum(bool(r['metrics'].get(key)) for r in rows) / len(rows):.1f}%"


def ident(rows: list[dict], key: str) -> str:
    deref = [r for r in rows if r["kind"] == "deref"]
    return f"{100 * sum(bool(r['metrics'].get(key)) for r in deref) / len(deref):.0f}%" if deref else "-"


def row(name: str, kind: str, rows: list[dict]) -> str:
    t = [r["timings"] for r in rows]
    decode = sum(x["decode_ms"] for x in t)
    tokens = sum(x["generated_tokens"] for x in t)
    total = [x["total_ms"] for x in t]
    monitored = "monitor_triggers" in t[0]
    cost = (f"{100 * sum(x['monitor_ms'] for x in t) / decode:.1f}% | {sum(x['monitor_triggers'] for x in t)} | "
            f"{sum(x['monitor_stepped_aside'] for x in t)}") if monitored else "- | - | -"
    return (f"| {name} | {kind} | {len(rows)} | {share(rows, 'exact_top')} | {share(rows, 'exact_any')} | "
            f"{statistics.mean(r['metrics']['edit_sim'] for r in rows):.3f} | {ident(rows, 'ident_top')} | "
            f"{ident(rows, 'ident_any')} | {share(rows, 'empty')} | {statistics.median(total):.0f} | "
            f"{percentile(total, 90):.0f} | {decode / max(tokens, 1):.1f} | {cost} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="FOLDER:config[,config...] (results of run_devset.py --out FOLDER)")
    args = p.parse_args()
    print(HEADER)
    for run in args.runs:
        folder, _, names = run.partition(":")
        for name in names.split(","):
            with open(Path(folder) / f"{name}.jsonl", encoding="utf-8") as f:
                results = [json.loads(line) for line in f]
            kinds = sorted({r["kind"] for r in results})
            for kind in kinds + (["all"] if len(kinds) > 1 else []):
                print(row(name, kind, [r for r in results if kind in ("all", r["kind"])]))


if __name__ == "__main__":
    main()
