"""Side-by-side table of the multi-draft decoders from one run_devset.py run.

    .venv/bin/python benchmarks/run_devset.py --configs greedy,greedy-3,greedy-3-seq,superposed-3 --out /tmp/dev
    .venv/bin/python benchmarks/multidraft_summary.py /tmp/dev

Per configuration: request latency (p50, p90, mean) and its ratio to the single greedy
draft's on the same cases (median of the per-case ratios), exact match of the top draft
and of any draft, deref identifier match (top, any), and the drafts' diversity: distinct
drafts per request, and the mean edit distance between two drafts of one request
(1 - edit similarity of their first lines).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding.metrics import edit_similarity, first_line, percentile  # noqa: E402

ORDER = ["greedy", "greedy-3", "greedy-3-seq", "sampling-3", "superposed-3"]


def load(folder: Path, name: str) -> dict[str, dict]:
    with open(folder / f"{name}.jsonl", encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f)}


def diversity(drafts: list[dict]) -> float:
    """Mean 1 - edit similarity over pairs of drafts' first lines (nan for fewer than 2 drafts)."""
    lines = [first_line(d["text"]) for d in drafts]
    pairs = list(itertools.combinations(lines, 2))
    return sum(1 - edit_similarity(a, b) for a, b in pairs) / len(pairs) if pairs else float("nan")


def row(name: str, records: dict[str, dict], base: dict[str, dict] | None) -> str:
    rs = list(records.values())
    lat = [r["timings"]["total_ms"] for r in rs]
    ratio = "-"
    if base is not None:
        ratios = [r["timings"]["total_ms"] / base[i]["timings"]["total_ms"] for i, r in records.items() if i in base]
        ratio = f"{statistics.median(ratios):.2f} ({percentile(lat, 50) / percentile([b['timings']['total_ms'] for b in base.values()], 50):.2f})"
    m = [r["metrics"] for r in rs]
    deref = [x for x in m if "ident_top" in x]
    divs = [d for r in rs if (d := diversity(r["drafts"])) == d]
    return (f"| {name} | {percentile(lat, 50):.0f} | {percentile(lat, 90):.0f} | {statistics.mean(lat):.0f} | {ratio} | "
            f"{sum(x['exact_top'] for x in m) / len(m):.1%} | {sum(x['exact_any'] for x in m) / len(m):.1%} | "
            f"{sum(bool(x['ident_top']) for x in deref) / max(len(deref), 1):.1%} | "
            f"{sum(bool(x['ident_any']) for x in deref) / max(len(deref), 1):.1%} | "
            f"{statistics.mean(len({d['text'] for d in r['drafts']}) for r in rs):.2f} | "
            f"{statistics.mean(divs) if divs else float('nan'):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args()
    names = [n for n in ORDER if (args.folder / f"{n}.jsonl").is_file()]
    base = load(args.folder, "greedy") if "greedy" in names else None
    print("| config | p50 ms | p90 ms | mean ms | latency / greedy, median per case (p50s) | exact top | exact any "
          "| ident top | ident any | distinct drafts | draft distance |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        print(row(n, load(args.folder, n), base))


if __name__ == "__main__":
    main()
