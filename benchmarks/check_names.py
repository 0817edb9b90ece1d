"""After the fact: how often suggestions name an attribute that does not exist, and what monitors cost.

Reads the per-configuration results that `run_devset.py --out DIR` wrote. For every draft
it puts the draft into the document at the cursor and, at each dereference the draft
writes (`obj.name`, the deref case's own name after the dot before the cursor included;
strings and comments skipped), asks jedi (no timeout) for the names valid there. A name
jedi does not list, and that the document does not use on the same receiver either, is
missing (a name the draft ends in only if no valid name starts with it: a budget may
have cut the draft short). Dereferences where jedi knows nothing (or meets `__getattr__`) are not counted.
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

from lsp.batch import Case, load_cases  # noqa: E402
from monitors.analysis import Analysis  # noqa: E402
from monitors.names import seen_attributes  # noqa: E402
from monitors.syntax import initial_state  # noqa: E402

NAME = re.compile(r"[A-Za-z_]\w*")
RECEIVER_END = re.compile(r"[\w)\]]\Z")


def derefs(case: Case, draft: str) -> list[tuple[str, int, str, bool]]:
    """(code, offset just after the dot, name, cut) for each dereference the draft names;
    `cut`: the name runs to the end of the draft (a budget may have cut it short)."""
    before = case.text[: case.offset()]
    code = before + draft + case.text[case.offset() :]
    found = []
    lex = initial_state(before)
    for i, ch in enumerate(draft):
        at = len(before) + i  # where `ch` sits in `code`
        if ch == "." and lex.in_code and RECEIVER_END.search(code[max(0, at - 1) : at]):
            m = NAME.match(draft, i + 1)
            if m:
                found.append((code, at + 1, m.group(), m.end() == len(draft)))
        lex = lex.feed(ch.encode("utf-8", "surrogatepass"))
    if before.endswith(".") and (m := NAME.match(draft)):
        found.insert(0, (code, len(before), m.group(), m.end() == len(draft)))
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, default=ROOT / "benchmarks" / "devset.jsonl")
    p.add_argument("--workspace", type=Path, default=ROOT / "benchmarks" / "workspace")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--configs", default="greedy,greedy-no-monitors")
    args = p.parse_args()
    cases, _ = load_cases(args.cases.read_text(encoding="utf-8").splitlines())
    by_id = {c.id: c for c in cases}
    analysis = Analysis(timeout=120, dynamic_params=True)  # all that jedi can know
    ws = args.workspace.resolve()
    print("| config | drafts | names checked | top draft names a missing attribute | any draft does "
          "| missing names / checked | monitor ms / decode ms |")
    print("|---|---|---|---|---|---|---|")
    for name in [n.strip() for n in args.configs.split(",") if n.strip()]:
        rows = [json.loads(line) for line in (args.results / f"{name}.jsonl").read_text().splitlines()]
        bad_top = bad_any = checked = missing = drafts = 0
        mon = dec = 0.0
        for r in rows:
            mon += r["timings"].get("monitor_ms", 0.0)
            dec += r["timings"].get("decode_ms", 0.0)
            case = by_id[r["id"]]
            path = str(ws / case.file)
            bad = []
            for d in r["drafts"]:
                drafts += 1
                wrong = False
                for code, off, attr, cut in derefs(case, d["text"]):
                    names = analysis.names(code, off, path, str(ws))
                    if not names:
                        continue
                    checked += 1
                    names = names | seen_attributes(code, off)
                    if attr not in names and not (cut and any(n.startswith(attr) for n in names)):
                        missing += 1
                        wrong = True
                        print(f"  {name} {r['id']}: .{attr} missing", file=sys.stderr)
                bad.append(wrong)
            bad_top += bool(bad and bad[0])
            bad_any += any(bad)
        share = f"{mon / dec:.1%}" if mon else "-"
        print(f"| {name} | {len(rows)} cases, {drafts} drafts | {checked} | {bad_top / len(rows):.1%} ({bad_top}) "
              f"| {bad_any / len(rows):.1%} ({bad_any}) | {missing} / {checked} | {share} |")


if __name__ == "__main__":
    main()
