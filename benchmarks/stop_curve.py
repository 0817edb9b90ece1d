"""The stop-on-uncertain curve: share of shown suggestions that are right against coverage.

    .venv/bin/python benchmarks/run_devset.py --configs greedy --out /tmp/dev
    .venv/bin/python benchmarks/stop_curve.py /tmp/dev/greedy.jsonl [--feature conf|margin]

Greedy decoding with stop-on-uncertain emits the same tokens as without it, up to the
first token whose confidence is below the threshold, where it stops. So one greedy run
that records every token's confidence (the probability of the chosen token, masks
applied) and margin (top-1 minus top-2 probability) gives the whole curve: for each
threshold, the draft is cut before its first unsure token past the healed text, and an
empty cut means no suggestion. A suggestion is right when its first line is a non-empty
prefix of the true rest of the line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding.metrics import first_line  # noqa: E402

THRESHOLDS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8]


def shown(draft: dict, feature: str, threshold: float) -> str:
    """The draft's text as stop-on-uncertain at `threshold` would have left it."""
    values, ends = draft.get(feature, []), draft.get("ends", [])
    for i, (v, end) in enumerate(zip(values, ends)):
        if end >= 0 and v < threshold:  # past the healed text, and unsure: stop before it
            keep = ends[i - 1] if i > 0 else -1
            return draft["text"][: max(keep, 0)].rstrip()
    return draft["text"]


def curve(records: list[dict], feature: str) -> list[dict[str, float]]:
    rows = []
    for t in THRESHOLDS:
        n = shown_n = right = chars = 0
        for r in records:
            n += 1
            d = r["drafts"][0] if r["drafts"] else None
            line = first_line(shown(d, feature, t)) if d else ""
            if not line:
                continue
            shown_n += 1
            chars += len(line)
            right += first_line(r["target"]).startswith(line)
        rows.append({"threshold": t, "coverage": shown_n / n, "precision": right / shown_n if shown_n else 0.0,
                     "right_of_all": right / n, "mean_chars": chars / shown_n if shown_n else 0.0, "cases": n})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="a run_devset.py --out JSONL of a greedy configuration")
    p.add_argument("--feature", choices=["conf", "margin"], default="margin")
    args = p.parse_args()
    records = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    print(f"Command: `.venv/bin/python benchmarks/stop_curve.py {args.results} --feature {args.feature}`  ")
    print(f"{len(records)} cases; a suggestion is right when its first line is a prefix of the true line.\n")
    print("| threshold | shown (coverage) | right, of shown | right, of all cases | mean shown chars |")
    print("|---|---|---|---|---|")
    for row in curve(records, args.feature):
        print(f"| {row['threshold']:.2f} | {row['coverage']:.1%} | {row['precision']:.1%} | "
              f"{row['right_of_all']:.1%} | {row['mean_chars']:.1f} |")


if __name__ == "__main__":
    main()
