"""Batch mode: case validation, metrics on hand-made drafts, and runs with the tiny model."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from decoding.engine import CompletionRequest, CompletionResult, Engine
from decoding.metrics import edit_similarity, leading_identifier, levenshtein, percentile, score
from decoding.sampling import Draft
from decoding.settings import Settings
from lsp.batch import format_summary, load_cases, parse_case, run_batch
from models.loading import LoadedModel


def _case(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "c1", "kind": "line", "file": "a.py", "line": 1, "character": 4,
                               "text": "import os\nx = \n", "target": "os.getcwd()"}
    return {**base, **kw}


# --- metrics -------------------------------------------------------------------------


def test_levenshtein_and_similarity() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert edit_similarity("abcd", "abcf") == 0.75
    assert edit_similarity("", "") == 1.0


def test_score_of_hand_made_drafts() -> None:
    s = score(["append(x)\n    more", "extend(y)"], "append(x)  ", ident="append")
    assert (s.exact_top, s.exact_any, s.edit_sim, s.empty, s.ident_top, s.ident_any) == (
        True, True, 1.0, False, True, True)
    s = score(["extend(y)", "append(x)"], "append(x)", ident="append")
    assert (s.exact_top, s.exact_any, s.ident_top, s.ident_any) == (False, True, False, True)
    assert s.edit_sim == pytest.approx(edit_similarity("extend(y)", "append(x)"))
    s = score([], "append(x)", ident="append")
    assert (s.exact_top, s.exact_any, s.edit_sim, s.empty, s.ident_top) == (False, False, 0.0, True, False)
    assert score(["foo"], "foo").ident_top is None  # line cases have no identifier metric
    assert leading_identifier("get_item(1)") == "get_item" and leading_identifier("(1)") == ""


def test_percentile() -> None:
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([5], 90) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert math.isnan(percentile([], 50))


# --- case files ---------------------------------------------------------------------------


def test_bad_cases_are_reported_and_skipped() -> None:
    lines = [
        json.dumps(_case()),
        "{not json",
        json.dumps({k: v for k, v in _case(id="c2").items() if k != "target"}),
        json.dumps(_case(id="c3", line=7)),
        json.dumps(_case(id="c4", character=9)),
        json.dumps(_case(id="c5", line="1")),
        json.dumps(_case()),  # duplicate id
        "",
        json.dumps([1, 2]),
        json.dumps(_case(id="c6", ident=3, kind="deref")),
    ]
    cases, errors = load_cases(lines)
    assert [c.id for c in cases] == ["c1"]
    assert len(errors) == 8
    joined = "\n".join(errors)
    for expected in ("line 2", "missing field(s): target", "line 7 is outside", "character 9 is outside",
                     "'line' has the wrong type", "duplicate id", "not a JSON object", "'ident'"):
        assert expected in joined


def test_cursor_columns_are_utf16() -> None:
    text = "s = '🐍'\nt = \n"
    case = parse_case(_case(text=text, line=0, character=7))  # the emoji counts two units
    assert text[: case.offset()] == "s = '🐍"
    assert text[: parse_case(_case(text=text, line=0, character=8)).offset()] == "s = '🐍'"
    with pytest.raises(ValueError):
        parse_case(_case(text=text, line=0, character=9))  # past the line's 8 units


# --- runs ---------------------------------------------------------------------------------


def test_summary_is_computed_from_the_drafts(tiny: LoadedModel) -> None:
    """With a stand-in completer, every number of the summary follows from the hand-made drafts."""
    cases, _ = load_cases([
        json.dumps(_case(id="a", kind="deref", text="xs = []\nxs.\n", line=1, character=3,
                         target="append(1)", ident="append")),
        json.dumps(_case(id="b", kind="deref", text="xs = []\nxs.\n", line=1, character=3,
                         target="pop()", ident="pop")),
        json.dumps(_case(id="c", kind="line", target="os.getcwd()")),
    ])
    drafts = {"append(1)": ["append(1)", "extend()"], "pop()": ["append(2)", "pop(0)"], "os.getcwd()": []}

    # Cases a and b share text and cursor: answer by the order of the calls.
    order = iter(["append(1)", "pop()", "os.getcwd()"])

    def routed(req: CompletionRequest) -> CompletionResult:
        texts = drafts[next(order)]
        return CompletionResult([Draft(t, [1, 2], [-0.1, -0.2]) for t in texts],
                                {"total_ms": 100.0 * len(texts) + 10, "decode_ms": 50.0, "generated_tokens": 4})

    out = io.StringIO()
    engine = Engine(tiny)
    summary = run_batch(engine, cases, Settings(), Path("/ws"), out, complete=routed)
    deref, line, every = summary["deref"], summary["line"], summary["all"]
    assert (deref["exact_top"], deref["exact_any"], deref["ident_top"], deref["ident_any"]) == (0.5, 0.5, 0.5, 1.0)
    assert deref["edit_sim"] == pytest.approx((1.0 + edit_similarity("append(2)", "pop()")) / 2)
    assert (line["exact_top"], line["empty"], line["edit_sim"]) == (0.0, 1.0, 0.0)
    assert math.isnan(line["ident_top"])
    assert every["cases"] == 3 and every["empty"] == pytest.approx(1 / 3)
    assert every["latency_p50_ms"] == 210 and every["tokens_per_s"] == pytest.approx(12 / 0.15)
    records = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert records[1]["metrics"]["ident_any"] is True and records[1]["drafts"][1]["text"] == "pop(0)"
    table = format_summary(summary)
    assert "| deref | 2 | 50.0% | 50.0% |" in table and "| line | 1 | 0.0% |" in table


def test_tiny_model_batch_writes_every_case(tiny: LoadedModel, tmp_path: Path) -> None:
    cases, _ = load_cases([json.dumps(_case(id=f"t{i}", character=i)) for i in range(4)])
    out = io.StringIO()
    settings = Settings.from_dict({"drafts": 2, "maxNewTokens": 4})[0]
    summary = run_batch(Engine(tiny), cases, settings, tmp_path, out)
    records = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["id"] for r in records] == ["t0", "t1", "t2", "t3"]
    assert all(r["timings"]["prompt_tokens"] > 0 and len(r["drafts"]) <= 2 for r in records)
    assert summary["line"]["cases"] == 4 and 0.0 <= summary["all"]["edit_sim"] <= 1.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lsp.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_batch_skips_bad_cases_and_prints_the_summary(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join([json.dumps(_case()), "oops", json.dumps(_case(id="c2", line=40))]) + "\n")
    out = tmp_path / "results.jsonl"
    r = _cli("batch", str(cases), "--model", "tiny", "--out", str(out), "--set", "maxNewTokens=3",
             "--summary-json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert "skipped bad case, line 2" in r.stderr and "line 40 is outside" in r.stderr
    assert "1 cases (2 skipped)" in r.stdout and "| line | 1 |" in r.stdout
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["c1"]
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["settings"]["maxNewTokens"] == 3 and saved["summary"]["all"]["cases"] == 1


def test_cli_batch_with_no_valid_case_fails_clearly(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text("[]\n")
    r = _cli("batch", str(cases), "--model", "tiny")
    assert r.returncode == 2 and "no valid cases" in r.stderr and "Traceback" not in r.stderr
    r = _cli("batch", str(tmp_path / "missing.jsonl"), "--model", "tiny")
    assert r.returncode == 2 and "cannot read" in r.stderr
