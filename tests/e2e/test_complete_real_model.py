"""The real default model (SmolLM2-135M) completes real code sensibly, in the engine and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from decoding.engine import CompletionRequest, Engine
from decoding.settings import Settings

pytestmark = pytest.mark.model

QUICK = Settings.from_dict({"drafts": 1, "maxNewTokens": 16, "timeBudgetMs": 60_000})[0]


def _complete(engine: Engine, text: str, settings: Settings = QUICK) -> list[str]:
    return [d.text for d in engine.complete(CompletionRequest(text, len(text), settings=settings)).drafts]


def test_list_method_after_dot(smol_engine: Engine) -> None:
    drafts = _complete(smol_engine, "items = []\nitems.")
    assert drafts and drafts[0].startswith("append")


def test_mid_identifier_cursor_is_healed(smol_engine: Engine) -> None:
    drafts = _complete(smol_engine, "import os\n\npath = os.path.jo")
    assert drafts and drafts[0].startswith("in(")  # os.path.join(


def test_indented_cursor_does_not_add_a_space(smol_engine: Engine) -> None:
    text = "from urllib.parse import urlparse\n\n\ndef host_of(url):\n    parts = urlparse(url)\n    "
    drafts = _complete(smol_engine, text)
    assert drafts and drafts[0][:1].strip(), drafts  # starts with code, not whitespace
    assert "return" in drafts[0] or "parts" in drafts[0]


def test_line_mode_ends_at_the_line_and_trims_the_suffix(smol_engine: Engine) -> None:
    text = "def area(width, height):\n    return width * \n"
    offset = text.index(" * ") + 3
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 16, "mode": "line", "timeBudgetMs": 60_000})[0]
    r = smol_engine.complete(CompletionRequest(text, offset, settings=s))
    assert r.drafts and "\n" not in r.drafts[0].text and "height" in r.drafts[0].text


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lsp.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_json_drafts_and_timings(tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    # A non-BMP character before the cursor: the column is in UTF-16 units (🐍 counts 2).
    src.write_text("names = ['🐍']\nnames.\n", encoding="utf-8")
    r = _run_cli("complete", str(src), "--line", "1", "--character", "6", "--drafts", "2",
                 "--max-new-tokens", "8", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["drafts"] and out["drafts"][0]["text"].startswith("append")
    assert {"text", "score"} <= set(out["drafts"][0])
    assert out["timings"]["prompt_tokens"] > 0 and out["timings"]["total_ms"] > 0
    assert src.read_text(encoding="utf-8") == "names = ['🐍']\nnames.\n"  # never writes the file


def test_cli_text_reports_speculation_and_early_exit(tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text("total = 0\nfor item in items:\n    total += item.price\nfor item in items:\n    ", encoding="utf-8")
    spec = _run_cli("complete", str(src), "--line", "4", "--character", "4", "--drafts", "1",
                    "--max-new-tokens", "12", "--set", "speculative=true")
    assert spec.returncode == 0, spec.stderr
    line = next(x for x in spec.stdout.splitlines() if x.startswith("--- speculative:"))
    passes, accepted, drafted = (int(w) for w in line.replace(",", "").split() if w.isdigit())
    assert passes >= 1 and 0 <= accepted <= drafted
    # Speculation loads float32 weights where `quantize: auto` would pick int8 (Settings.load_quantize).
    plain = _run_cli("complete", str(src), "--line", "4", "--character", "4", "--drafts", "1",
                     "--max-new-tokens", "12", "--quantize", "none")
    # The draft's text (the lines after its header, whose score may differ in the last digit).
    draft = lambda out: out.split("--- draft 1", 1)[1].split("\n", 1)[1].split("--- timings", 1)[0]  # noqa: E731
    assert draft(spec.stdout).strip() and draft(spec.stdout) == draft(plain.stdout)  # lossless
    assert "--- speculative" not in plain.stdout and "--- early exit" not in plain.stdout
    ee = _run_cli("complete", str(src), "--line", "4", "--character", "4", "--drafts", "1",
                  "--max-new-tokens", "12", "--set", "earlyExit=true")
    line = next(x for x in ee.stdout.splitlines() if x.startswith("--- early exit:"))
    assert 1 <= float(line.split()[3]) <= 30


def test_cli_reports_a_bad_model_path_clearly(tmp_path: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    r = _run_cli("complete", str(src), "--line", "0", "--character", "0", "--model", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "not found" in r.stderr and "Traceback" not in r.stderr


def test_batch_on_real_cases(smol_engine: Engine, tmp_path: Path) -> None:
    """The default model through batch mode: the list method is found, and scored as found."""
    from lsp.batch import load_cases, run_batch

    text = "def collect(n):\n    items = []\n    for i in range(n):\n        items.\n    return items\n"
    lines = [
        json.dumps({"id": "d1", "kind": "deref", "file": "m.py", "line": 3, "character": 14, "text": text,
                    "target": "append(i)", "ident": "append"}),
        json.dumps({"id": "l1", "kind": "line", "file": "m.py", "line": 0, "character": 0,
                    "text": "import os\n", "target": "import os"}),  # cursor at the start of a full line
    ]
    cases, errors = load_cases(lines)
    assert not errors
    summary = run_batch(smol_engine, cases, QUICK, tmp_path)
    assert summary["deref"]["ident_top"] == 1.0 and summary["deref"]["cases"] == 1
    assert summary["all"]["cases"] == 2 and summary["all"]["tokens_per_s"] > 0


SPEC_PROMPTS = [
    "import os\n\n\ndef list_python_files(root):\n    out = []\n    for name in os.listdir(root):\n        ",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        ",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return ",
    "import json\n\n\ndef load(path):\n    with open(path) as f:\n        return json.",
]


def test_speculative_decoding_gives_greedy_output_with_the_shipped_heads(smol: object, smol_engine: Engine) -> None:
    assert smol.info.get("exit_heads"), "the default model loads its shipped exit heads"  # type: ignore[attr-defined]
    drafted = accepted = 0
    for monitors in (True, False):
        for text in SPEC_PROMPTS:
            wire = {"drafts": 2, "maxNewTokens": 24, "timeBudgetMs": 120_000, "mode": "block", "monitors": monitors}
            plain = smol_engine.complete(CompletionRequest(text, len(text), settings=Settings.from_dict(wire)[0]))
            fast = smol_engine.complete(CompletionRequest(
                text, len(text), settings=Settings.from_dict({**wire, "speculative": True})[0]))
            assert [d.token_ids for d in fast.drafts] == [d.token_ids for d in plain.drafts], text
            drafted += fast.timings["spec_drafted"]
            accepted += fast.timings["spec_accepted"]
    assert drafted > 0 and accepted > 0  # drafts were made, and the full model kept some
