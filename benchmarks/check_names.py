"""After the fact: how often a draft names an attribute that does not exist, and what monitors cost.

Reads the per-configuration results that `run_devset.py --out DIR` wrote, asks jedi (no
timeout) for the names valid at each deref case's cursor, and counts top drafts (and any
draft) whose identifier is not one of them. Cases where jedi knows no names are left out.
Also prints the monitors' share of decode time from the results' timings.

    .venv/bin/python benchmarks/check_names.py --results DIR [--configs greedy,greedy-no-monitors]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lsp.batch import load_cases  # noqa: E402
from lsp.positions import to_offset  # noqa: E402
from monitors.analysis import Analysis  # noqa: E402
from monitors.names import seen_attributes  # noqa: E402

IDENT = re.compile(r"\w+")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, default=ROOT / "benchmarks" / "devset.jsonl")
    p.add_argument("--workspace", type=Path, default=ROOT / "benchmarks" / "workspace")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--configs", default="greedy,greedy-no-monitors")
    args = p.parse_args()
    cases, _ = load_cases(args.cases.read_text(encoding="utf-8").splitlines())
    deref = {c.id: c for c in cases if c.kind == "deref"}
    analysis = Analysis(timeout=60)
    ws = args.workspace.resolve()
    known: dict[str, frozenset[str]] = {}
    for c in deref.values():
        off = to_offset(c.text, c.line, c.character)
        names = analysis.names(c.text, off, str(ws / c.file), str(ws))
        if names:  # what jedi knows, and what the document itself uses on the same object
            known[c.id] = names | seen_attributes(c.text, off)
    print(f"{len(known)} of {len(deref)} deref cases have names jedi knows", file=sys.stderr)
    print("| config | deref cases checked | top draft names a missing attribute | any draft does | "
          "monitor ms / decode ms |")
    print("|---|---|---|---|---|")
    for name in [n.strip() for n in args.configs.split(",") if n.strip()]:
        rows = [json.loads(line) for line in (args.results / f"{name}.jsonl").read_text().splitlines()]
        bad_top = bad_any = checked = 0
        mon = dec = 0.0
        for r in rows:
            mon += r["timings"].get("monitor_ms", 0.0)
            dec += r["timings"].get("decode_ms", 0.0)
            names = known.get(r["id"])
            if names is None:
                continue
            checked += 1
            idents = [m.group() for d in r["drafts"] if (m := IDENT.match(d["text"]))]
            wrong = [i not in names for i in idents]
            bad_top += bool(wrong and wrong[0])
            bad_any += any(wrong)
        share = f"{mon / dec:.1%}" if mon else "-"
        print(f"| {name} | {checked} | {bad_top / checked:.1%} ({bad_top}) | {bad_any / checked:.1%} ({bad_any}) "
              f"| {share} |")


if __name__ == "__main__":
    main()
