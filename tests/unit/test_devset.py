"""Integrity of the committed development set, benchmarks/devset.jsonl (no jedi, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lsp.positions import to_offset

DEVSET = Path(__file__).resolve().parents[2] / "benchmarks" / "devset.jsonl"
FIELDS = {"id": str, "kind": str, "file": str, "line": int, "character": int, "text": str, "target": str}


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    """Every case of the dev set, in file order."""
    with DEVSET.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_fields_and_types(cases: list[dict]) -> None:
    """Every case has the fields with the right types; only deref cases carry `ident`."""
    for case in cases:
        for name, typ in FIELDS.items():
            # bool is an int subclass; a position must not be one.
            assert isinstance(case[name], typ) and not isinstance(case[name], bool), (case["id"], name)
        assert case["line"] >= 0 and case["character"] >= 0, case["id"]
        assert ("ident" in case) == (case["kind"] == "deref"), case["id"]
        assert not Path(case["file"]).is_absolute() and ".." not in Path(case["file"]).parts, case["id"]


def test_kinds_and_unique_ids(cases: list[dict]) -> None:
    """Both kinds are there, about 100 each, and no id repeats."""
    kinds = [case["kind"] for case in cases]
    assert set(kinds) == {"deref", "line"}
    assert kinds.count("deref") >= 90 and kinds.count("line") >= 90
    ids = [case["id"] for case in cases]
    assert len(set(ids)) == len(ids)


def test_cursor_cuts_the_line(cases: list[dict]) -> None:
    """The UTF-16 position lands where the line was cut: the line ends right at the cursor."""
    for case in cases:
        text = case["text"]
        offset = to_offset(text, case["line"], case["character"])
        assert text[offset:] == "" or text[offset] == "\n", case["id"]
        # to_offset clamps positions past the end of a line; the units before must match exactly.
        line_start = text.rfind("\n", 0, offset) + 1
        assert len(text[line_start:offset].encode("utf-16-le")) // 2 == case["character"], case["id"]
        assert text.count("\n", 0, offset) == case["line"], case["id"]


def test_targets(cases: list[dict]) -> None:
    """Targets are one non-empty line; a deref target starts with its identifier right after a dot."""
    for case in cases:
        target = case["target"]
        assert target and "\n" not in target and "\r" not in target, case["id"]
        if case["kind"] == "deref":
            offset = to_offset(case["text"], case["line"], case["character"])
            assert case["text"][offset - 1] == ".", case["id"]
            assert case["ident"].isidentifier() and target.startswith(case["ident"]), case["id"]


def test_a_held_out_sample_leaves_out_the_dev_sets_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         cases: list[dict]) -> None:
    import benchmarks.build_devset as builder

    drawn = [cases[0], cases[-1], {**cases[1], "id": "new.py:1:1", "file": "new.py"}]
    monkeypatch.setattr(builder, "install", lambda workspace: None)
    monkeypatch.setattr(builder, "build", lambda workspace, per_kind, seed: list(drawn))
    out = tmp_path / "heldout.jsonl"
    assert builder.main(["--seed", "7", "--out", str(out), "--exclude", str(DEVSET)]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["new.py:1:1"]
