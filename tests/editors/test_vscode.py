"""The VS Code extension (editors/vscode): its manifest against the server's Settings, the
settings mapping in node, the extension driving a fake and the real server (through the
real vscode-languageclient and a fake `vscode` module), and the .vsix build."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from decoding.settings import _RANGES, Settings

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "editors" / "vscode"
NODE = shutil.which("node")
NPM = shutil.which("npm")
# draftls.* keys that configure the extension itself and never reach the server.
CLIENT_KEYS = {"server.path", "server.args", "trace.server"}
# What npm prints when it cannot reach the registry (then the test skips, not fails).
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH",
                  "EHOSTUNREACH", "npm error network", "npm ERR! network")


def _node_major() -> int:
    if NODE is None:
        return 0
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


NODE_MAJOR = _node_major()
needs_node = pytest.mark.skipif(NODE_MAJOR < 18, reason="needs node >= 18 (node --test); node is missing or older")


def _manifest() -> dict[str, Any]:
    return json.loads((EXT / "package.json").read_text())


def _server_properties() -> dict[str, dict[str, Any]]:
    """contributes.configuration properties for the server settings, by wire name."""
    props = _manifest()["contributes"]["configuration"]["properties"]
    assert all(key.startswith("draftls.") for key in props), sorted(props)
    return {key.removeprefix("draftls."): p for key, p in props.items() if key.removeprefix("draftls.") not in CLIENT_KEYS}


def _json_type(hint: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[hint]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=EXT, capture_output=True, text=True, timeout=timeout)


def _tap_counts(output: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", output, re.M)}


# ---------------------------------------------------------------- the manifest


def test_manifest_settings_match_the_server_dataclass() -> None:
    """One configuration property per wire name, with the dataclass's type, default and enum."""
    wire = Settings().to_wire()
    props = _server_properties()
    assert sorted(props) == sorted(wire)
    hints = get_type_hints(Settings)
    for field, name in zip(fields(Settings), wire, strict=True):
        prop, hint, default = props[name], hints[field.name], wire[name]
        assert prop["default"] == default and type(prop["default"]) is type(default), name
        if get_origin(hint) is Literal:
            assert prop["type"] == "string", name
            assert prop["enum"] == list(get_args(hint)), name
            assert len(prop.get("enumDescriptions", prop["enum"])) == len(prop["enum"]), name
        else:
            assert prop["type"] == _json_type(hint), name
            assert "enum" not in prop, name
        lo, hi = _RANGES.get(field.name, (None, None))
        assert prop.get("minimum") == lo and prop.get("maximum") == hi, name
        assert prop.get("description", "").strip(), name


def test_manifest_client_settings_commands_and_pins() -> None:
    """The extension's own settings and commands are declared and used; dependencies are pinned."""
    manifest = _manifest()
    props = manifest["contributes"]["configuration"]["properties"]
    assert props["draftls.server.path"]["default"] == "draftls"
    assert props["draftls.server.args"]["default"] == ["serve"]
    assert set(props) - {f"draftls.{k}" for k in Settings().to_wire()} == {f"draftls.{k}" for k in CLIENT_KEYS}
    assert manifest["name"] == "draftls" and manifest["publisher"]
    assert "onLanguage:python" in manifest["activationEvents"]
    assert (EXT / manifest["main"]).is_file()

    declared = {c["command"] for c in manifest["contributes"]["commands"]}
    source = (EXT / "extension.js").read_text()
    registered = set(re.findall(r"registerCommand\('([\w.]+)'", source))
    assert declared == registered == {"draftls.showStatus", "draftls.restart"}

    lock = json.loads((EXT / "package-lock.json").read_text())
    for section in ("dependencies", "devDependencies"):
        for package, version in manifest[section].items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package} is not pinned: {version}"
            assert lock["packages"][f"node_modules/{package}"]["version"] == version, package
    # Inline completion through LSP is stable from vscode-languageclient 10 (LSP 3.18).
    assert int(manifest["dependencies"]["vscode-languageclient"].split(".")[0]) >= 10


# ---------------------------------------------------------------- node, no node_modules


@needs_node
def test_javascript_parses() -> None:
    for name in ("extension.js", "settings.js", "status.js"):
        result = _run([NODE, "--check", name])
        assert result.returncode == 0, result.stderr


@needs_node
def test_settings_and_status_modules_node_test() -> None:
    """node --test on the pure modules: the settings mapping and the status bar text."""
    result = _run([NODE, "--test", "--test-reporter=tap", "test/settings.test.js", "test/status.test.js"])
    counts = _tap_counts(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert counts.get("fail") == 0 and counts.get("pass", 0) >= 15, counts


def _parity_cases() -> list[dict[str, Any]]:
    """One-key inputs per setting: valid, boundary and invalid values (JSON-able, no null)."""
    cases: list[dict[str, Any]] = []
    hints = get_type_hints(Settings)
    for field, name in zip(fields(Settings), Settings().to_wire(), strict=True):
        hint = hints[field.name]
        values: list[Any] = ["", "  ", 1, True, [1], {"a": 1}]
        if get_origin(hint) is Literal:
            values += list(get_args(hint)) + [c.upper() for c in get_args(hint)] + ["gpu"]
        elif hint is bool:
            values += [False, 0, "true"]
        elif hint is str:
            values += ["x", "/models/coder.gguf", 5.5]
        else:
            lo, hi = _RANGES[field.name]
            values += [lo, hi, lo - 1, hi + 1, (lo + hi) / 2, 2.0, 2.5, "3", False]
            if hint is float:
                values += [lo - 0.001, hi + 0.001, 1]
        cases += [{name: v} for v in values]
    return cases


@needs_node
def test_settings_mapping_agrees_with_the_server() -> None:
    """A value the extension sends is one the server accepts as is; one it drops, the server rejects."""
    cases = _parity_cases() + [Settings().to_wire(), {"unknown": 1, "max_new_tokens": 5}]
    script = (
        "const s = require('./settings'); let d = '';"
        "process.stdin.on('data', (c) => (d += c)).on('end', () =>"
        " console.log(JSON.stringify(JSON.parse(d).map((x) => s.toServerSettingsReport(x)))));"
    )
    result = subprocess.run([NODE, "-e", script], cwd=EXT, input=json.dumps(cases), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert len(reports) == len(cases)
    for case, report in zip(cases[:-2], reports[:-2], strict=True):
        ((name, value),) = case.items()
        parsed, warnings = Settings.from_dict(case)
        if name in report["settings"]:
            assert not warnings, (case, warnings)
            assert report["settings"][name] == parsed.to_wire()[name], case
        else:
            assert report["invalid"] == [name], (case, report)
            assert warnings, f"the extension drops {case} but the server accepts it"
    assert reports[-2] == {"settings": Settings().to_wire(), "invalid": []}
    assert reports[-1] == {"settings": {}, "invalid": []}


# ---------------------------------------------------------------- node_modules (npm ci)


def _modules_match_lock() -> bool:
    """node_modules holds exactly the locked versions (npm's hidden lockfile says what is installed)."""
    hidden = EXT / "node_modules" / ".package-lock.json"
    if not hidden.is_file():
        return False
    installed = json.loads(hidden.read_text())["packages"]
    locked = json.loads((EXT / "package-lock.json").read_text())["packages"]
    return all(
        installed.get(path, {}).get("version") == entry.get("version")
        for path, entry in locked.items()
        if path and not entry.get("optional")
    )


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """editors/vscode/node_modules as locked: npm ci when absent or stale; skips without a registry."""
    if NODE_MAJOR < 18 or NPM is None:
        pytest.skip("node >= 18 and npm are needed")
    if not _modules_match_lock():
        result = _run([NPM, "ci", "--no-audit", "--no-fund"], timeout=300)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            network = [line for line in output.splitlines() if any(code in line for code in NETWORK_ERRORS)]
            if network:
                pytest.skip(f"npm cannot reach the registry: {network[0].strip()}")
            pytest.fail(f"npm ci failed:\n{output[-4000:]}")
        assert _modules_match_lock(), "npm ci did not install the locked versions"
    return EXT / "node_modules"


def test_extension_against_a_fake_server(node_modules: Path) -> None:
    """extension.js with a fake vscode module drives test/fake-server.js through vscode-languageclient,
    and fails cleanly when the server executable is missing."""
    result = _run([NODE, "--test", "--test-reporter=tap", "test/extension.test.js", "test/start-failure.test.js"],
                  timeout=90)
    counts = _tap_counts(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert counts == {"pass": 2, "fail": 0, "cancelled": 0, "skipped": 0}, counts


def test_extension_against_the_real_server(node_modules: Path) -> None:
    """extension.js drives `draftls serve` (tiny model): ready, inline drafts with the accept command, acceptance counted."""
    if importlib.util.find_spec("lsp.server") is None:
        pytest.skip("the language server (lsp/server.py) is not there yet")
    draftls = Path(sys.executable).parent / "draftls"
    assert draftls.is_file(), f"{draftls} is missing: is the project installed in this environment?"
    env = {**os.environ, "DRAFTLS_SERVER": str(draftls), "DRAFTLS_TEST_MODEL": "tiny"}
    result = subprocess.run([NODE, "--test", "--test-reporter=tap", "test/real-server.test.js"], cwd=EXT, env=env,
                            capture_output=True, text=True, timeout=180)
    counts = _tap_counts(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert counts == {"pass": 1, "fail": 0, "cancelled": 0, "skipped": 0}, counts


@pytest.mark.skipif(NODE_MAJOR < 20, reason="@vscode/vsce 3.x needs node >= 20")
def test_vsix_builds(node_modules: Path, tmp_path: Path) -> None:
    """vsce packages the extension with its runtime dependency and without tests or dev tools."""
    vsix = tmp_path / "draftls.vsix"
    vsce = node_modules / ".bin" / "vsce"
    result = _run([str(vsce), "package", "--allow-missing-repository", "--out", str(vsix)], timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    with zipfile.ZipFile(vsix) as z:
        names = set(z.namelist())
        packaged = json.loads(z.read("extension/package.json"))
        client = json.loads(z.read("extension/node_modules/vscode-languageclient/package.json"))
    for name in ("extension.vsixmanifest", "extension/package.json", "extension/extension.js",
                 "extension/settings.js", "extension/status.js", "extension/readme.md", "extension/LICENSE.txt",
                 "extension/node_modules/vscode-languageclient/lib/node/main.js",
                 "extension/node_modules/vscode-languageserver-protocol/package.json",
                 "extension/node_modules/vscode-jsonrpc/package.json"):
        assert name in names, name
    assert not any(n.startswith(("extension/test/", "extension/node_modules/@vscode/vsce")) for n in names)
    manifest = _manifest()
    assert packaged["contributes"] == manifest["contributes"]
    assert client["version"] == manifest["dependencies"]["vscode-languageclient"]
