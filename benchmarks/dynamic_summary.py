"""Side-by-side table of the dynamic-inference configurations from one run_devset.py run.

    .venv/bin/python benchmarks/run_devset.py --configs greedy,greedy-exit,greedy-spec,greedy-spec-stop,greedy-stop \
        --out /tmp/dev
    .venv/bin/python benchmarks/dynamic_summary.py /tmp/dev

Per configuration: decode ms per generated token, request latency p50/p90, speculation's
acceptance (accepted of drafted tokens) and mean accepted tokens per verify pass, early
exit's mean layers per token, and quality (exact top line, edit similarity, deref
identifier match, share of cases with no suggestion, and share of shown suggestions whose
first line is a prefix of the true line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding.metrics import first_line, percentile  # noqa: E402

ORDER = ["greedy", "greedy-exit", "greedy-spec", "greedy-spec-stop", "greedy-stop"]


def row(name: str, records: list[dict]) -> str:
    t = [r["timings"] for r in records]
    tokens = sum(x.get("generated_tokens", 0) for x in t)
    decode = sum(x.get("decode_ms", 0.0) for x in t)
    lat = [x["total_ms"] for x in t]
    drafted = sum(x.get("spec_drafted", 0) for x in t)
    accepted = sum(x.get("spec_accepted", 0) for x in t)
    rounds = sum(x.get("spec_rounds", 0) for x in t)
    exit_tokens = sum(x.get("exit_tokens", 0) for x in t)
    exit_layers = sum(x.get("exit_mean_layers", 0) * x.get("exit_tokens", 0) for x in t)
    m = [r["metrics"] for r in records]
    deref = [x for x in m if "ident_top" in x]
    shown = [r for r in records if r["drafts"] and first_line(r["drafts"][0]["text"])]
    right = sum(first_line(r["target"]).startswith(first_line(r["drafts"][0]["text"])) for r in shown)
    spec = f"{accepted / drafted:.1%} | {accepted / rounds:.2f}" if rounds else "- | -"
    layers = f"{exit_layers / exit_tokens:.2f}" if exit_tokens else "-"
    return (f"| {name} | {decode / max(tokens, 1):.1f} | {percentile(lat, 50):.0f} | {percentile(lat, 90):.0f} | "
            f"{spec} | {layers} | {sum(x['exact_top'] for x in m) / len(m):.1%} | "
            f"{sum(x['edit_sim'] for x in m) / len(m):.3f} | "
            f"{sum(x['ident_top'] for x in deref) / max(len(deref), 1):.1%} | "
            f"{sum(x['empty'] for x in m) / len(m):.1%} | {right / max(len(shown), 1):.1%} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="the --out folder of run_devset.py")
    args = p.parse_args()
    names = [n for n in ORDER if (args.results / f"{n}.jsonl").is_file()]
    print("| config | decode ms/token | p50 ms | p90 ms | acceptance | accepted per verify pass | mean layers "
          "| exact top | edit sim | deref ident top | no suggestion | shown that are right (prefix) |")
    print("|---" * 12 + "|")
    for name in names:
        records = [json.loads(line) for line in (args.results / f"{name}.jsonl").read_text().splitlines() if line]
        print(row(name, records))


if __name__ == "__main__":
    main()
