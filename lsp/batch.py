"""Headless batch completion: a JSONL file of cases in, drafts and a scored summary out."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from decoding.engine import CompletionRequest, CompletionResult, Engine
from decoding.metrics import CaseScore, score, summarize
from decoding.settings import Settings
from lsp import collector
from lsp.positions import line_starts, to_offset

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": (str, int), "kind": str, "file": str, "line": int, "character": int, "text": str, "target": str,
}


@dataclass(frozen=True)
class Case:
    """One completion case: a document as the editor holds it and the truth at the cursor."""

    id: str
    kind: str
    file: str
    line: int
    character: int
    text: str
    target: str
    ident: str | None = None

    def offset(self) -> int:
        """The cursor as a string offset (line and character are 0-based, UTF-16)."""
        return to_offset(self.text, self.line, self.character)


def _line_units(text: str, line: int) -> int:
    starts = line_starts(text)
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    body = text[starts[line] : end].rstrip("\r\n")
    return len(body.encode("utf-16-le", errors="surrogatepass")) // 2


def parse_case(raw: Any) -> Case:
    """A Case from one decoded JSON line; ValueError says what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    for key, kind in REQUIRED.items():
        if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
            raise ValueError(f"field {key!r} has the wrong type ({type(raw[key]).__name__})")
    ident = raw.get("ident")
    if ident is not None and not isinstance(ident, str):
        raise ValueError("field 'ident' must be a string")
    case = Case(str(raw["id"]), raw["kind"], raw["file"], raw["line"], raw["character"], raw["text"],
                raw["target"], ident)
    n_lines = len(line_starts(case.text))
    if not 0 <= case.line < n_lines:
        raise ValueError(f"line {case.line} is outside the text ({n_lines} lines)")
    units = _line_units(case.text, case.line)
    if not 0 <= case.character <= units:
        raise ValueError(f"character {case.character} is outside line {case.line} ({units} UTF-16 units)")
    return case


def load_cases(lines: Iterable[str]) -> tuple[list[Case], list[str]]:
    """Valid cases, and one message per bad line (which are skipped)."""
    cases: list[Case] = []
    errors: list[str] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = parse_case(json.loads(line))
        except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            errors.append(f"line {n}: {e}")
            continue
        if case.id in seen:
            errors.append(f"line {n}: duplicate id {case.id!r}")
            continue
        seen.add(case.id)
        cases.append(case)
    return cases, errors


def case_result(case: Case, result: CompletionResult) -> tuple[dict[str, Any], CaseScore]:
    """The JSON record of one case, and its score."""
    s = score([d.text for d in result.drafts], case.target, case.ident if case.kind == "deref" else None)
    record = {
        "id": case.id, "kind": case.kind, "target": case.target,
        "drafts": [{"text": d.text, "score": d.score, "stop": d.stop_reason, "tokens": len(d.token_ids),
                    # per token, for the stop-on-uncertain curve (benchmarks/stop_curve.py)
                    "conf": [round(c, 4) for c in d.confidences], "margin": [round(m, 4) for m in d.margins],
                    "ends": d.ends}
                   for d in result.drafts],
        "timings": result.timings,
        "metrics": {k: v for k, v in vars(s).items() if v is not None},
    }
    return record, s


def _run_case(engine: Engine, case: Case, settings: Settings, workspace: Path,
              complete: Callable[[CompletionRequest], CompletionResult], warm: bool) -> tuple[dict[str, Any], CaseScore]:
    path = workspace / case.file
    if warm:
        # An editor opens a file before it asks for completions in it, and the server lets
        # static analysis read it then (didOpen); so does batch mode, before the file's
        # first case, outside its timing.
        engine.analysis.warm(case.text, str(path), str(workspace)).result(timeout=60)
    req = CompletionRequest(case.text, case.offset(), str(path), str(workspace), settings)
    return case_result(case, complete(req))


def run_batch(
    engine: Engine,
    cases: list[Case],
    settings: Settings,
    workspace: Path,
    out: TextIO | None = None,
    progress: bool = False,
    complete: Callable[[CompletionRequest], CompletionResult] | None = None,
) -> dict[str, dict[str, float]]:
    """Complete every case (writing one JSON line each to `out`); summary per kind and overall."""
    from tqdm import tqdm

    warm = complete is None and settings.monitors
    complete = complete or engine.complete
    by_kind: dict[str, list[tuple[CaseScore, dict[str, float]]]] = {}
    with collector.installed():
        for i, case in enumerate(tqdm(cases, desc="cases", unit="case", disable=not progress, file=sys.stderr)):
            record, s = _run_case(engine, case, settings, workspace, complete,
                                  warm and (i == 0 or cases[i - 1].file != case.file))
            # Between cases, outside their timings, as the server does when the editor is quiet;
            # recorded, so that the time is not hidden.
            record["timings"]["idle_gc_ms"] = collector.idle()
            if out is not None:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            by_kind.setdefault(case.kind, []).append((s, record["timings"]))
    summary: dict[str, dict[str, float]] = {}
    groups = {k: by_kind[k] for k in sorted(by_kind)}
    if by_kind:
        groups["all"] = [x for k in sorted(by_kind) for x in by_kind[k]]
    for kind, rows in groups.items():
        timings = [t for _, t in rows]
        summary[kind] = summarize(
            [s for s, _ in rows],
            [t["total_ms"] for t in timings],
            int(sum(t["generated_tokens"] for t in timings)),
            sum(t["decode_ms"] for t in timings),
        )
    return summary


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """A Markdown table, one row per kind."""
    head = ("| kind | cases | exact top | exact any | edit sim | ident top | ident any | empty "
            "| p50 ms | p90 ms | tokens/s |")
    rows = [head, "|" + "---|" * 11]

    def pct(v: float) -> str:
        return "-" if v != v else f"{100 * v:.1f}%"  # nan: not applicable

    for kind, m in summary.items():
        rows.append(
            f"| {kind} | {int(m['cases'])} | {pct(m['exact_top'])} | {pct(m['exact_any'])} | "
            f"{m['edit_sim']:.3f} | {pct(m['ident_top'])} | {pct(m['ident_any'])} | {pct(m['empty'])} | "
            f"{m['latency_p50_ms']:.0f} | {m['latency_p90_ms']:.0f} | {m['tokens_per_s']:.1f} |"
        )
    return "\n".join(rows)
