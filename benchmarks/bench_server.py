"""Latency of `draftls serve` as an editor sees it: a real LSP client over stdio.

For dereference sites in real code (standard-library modules, cut right after `obj.`), the
client opens the document and asks `textDocument/inlineCompletion` (cold: the server's KV
cache holds another document). Then, `--typed` times: it types the next character of the
top draft (the ghost text) and asks again, and types a character that no draft predicted
and asks again. The same run is repeated with `kvReuse` off, side by side.

    .venv/bin/python benchmarks/bench_server.py [--sites 8] [--typed 2] [--write BENCHMARKS.md]
    .venv/bin/python benchmarks/bench_server.py --backends torch,auto   # the same server on each backend
    .venv/bin/python benchmarks/bench_server.py --backends torch,auto,onnx:int8   # backend:quantize

With --backends, each backend's server runs the same sites (kvReuse on, the default), the
backends in turn, twice, so the machine's drift hits them alike; it prints one row per
backend, with the ratio of a request after a one-character edit to the first backend's.

Client-side wall-clock per request; timings from the server's `draftls.status` too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import inspect
import importlib
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import machine  # noqa: E402

MODULES = ["shutil", "argparse", "textwrap", "logging.handlers", "json.decoder", "tarfile", "zipfile", "inspect"]
START, END = "<!-- server:start -->", "<!-- server:end -->"
DEREF = re.compile(r"\b(self|os\.path|os|re|sys)\.(?=[a-z_])")


def sites(n: int) -> list[tuple[str, str, int, int]]:
    """(name, text, line, column): each module cut right after a dereference past its first 150 lines."""
    out = []
    for name in MODULES[:n]:
        lines = inspect.getsource(importlib.import_module(name)).splitlines(keepends=True)
        for i in range(150, len(lines)):
            m = DEREF.search(lines[i])
            if m and not lines[i].lstrip().startswith("#"):
                lines[i] = lines[i][: m.end()] + "\n"
                out.append((name, "".join(lines), i, m.end()))
                break
    return out


async def run(kv_reuse: bool, n_sites: int, typed: int, backend: str = "auto") -> dict[str, list[float]]:
    """One server over the sites; `backend` is a backend name, or `name:quantize` (e.g. onnx:int8)."""
    kind, _, quantize = backend.partition(":")
    options = {"kvReuse": kv_reuse, "drafts": 3, "timeBudgetMs": 10000, "backend": kind}
    if quantize:
        options["quantize"] = quantize
    cfg = ClientServerConfig(server_command=[sys.executable, "-m", "lsp.cli", "serve"])
    client: LanguageClient = await cfg.start(devtools=None)
    await client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(),
        initialization_options=options))

    async def status() -> dict[str, Any]:
        return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="draftls.status"))

    while (s := await status())["state"] not in ("ready", "failed"):
        await asyncio.sleep(0.2)
    assert s["state"] == "ready", s["error"]
    loop = asyncio.get_running_loop()
    out: dict[str, list[float]] = {k: [] for k in ("cold", "through", "other", "cold_prefill", "other_prefill")}
    for name, text, line, col in sites(n_sites):
        uri = f"file:///bench/{name}.py"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        version, pos = 1, col

        async def ask() -> tuple[float, list[str], dict[str, Any]]:
            t0 = loop.time()
            res = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, pos),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
            ms = (loop.time() - t0) * 1000
            return ms, [i.insert_text for i in res.items], (await status())["last"]

        def type_char(c: str) -> None:
            nonlocal version, pos
            version += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(line, pos), types.Position(line, pos)), text=c)]))
            pos += 1

        ms, drafts, last = await ask()
        out["cold"].append(ms)
        out["cold_prefill"].append(last["prefilled_tokens"])
        for _ in range(typed):
            # Type what the top draft predicts (the editor shows it as ghost text) ...
            if drafts and len(drafts[0]) > pos - col:
                type_char(drafts[0][pos - col])
                ms, drafts, last = await ask()
                out["through"].append(ms)
            # ... then a character that no draft predicts, which needs the model again.
            k = pos - col
            type_char(next(c for c in "qzxkvj" if not any(d[k : k + 1] == c for d in drafts)))
            ms, drafts, last = await ask()
            out["other"].append(ms)
            out["other_prefill"].append(last["prefilled_tokens"])
        print(f"  {name}: first {out['cold'][-1]:.0f} ms, typed {statistics.median(out['other'][-typed:]):.0f} ms",
              file=sys.stderr)
    await client.shutdown_session()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=8)
    p.add_argument("--typed", type=int, default=2, help="rounds of (suggested character, other character) per site")
    p.add_argument("--write", type=Path, help="replace the server section of this Markdown file")
    p.add_argument("--backends", help="compare backends (e.g. torch,auto,onnx:int8) instead of kvReuse on and off")
    args = p.parse_args()
    if args.backends:
        compare_backends([b.strip() for b in args.backends.split(",")], args.sites, args.typed)
        return
    rows = []
    res = {}
    for reuse in (True, False):
        print(f"kvReuse={reuse}", file=sys.stderr)
        res[reuse] = asyncio.run(run(reuse, args.sites, args.typed))
    med = {r: {k: statistics.median(v) for k, v in res[r].items()} for r in res}
    for reuse in (True, False):
        m = med[reuse]
        through = f"{m['through']:.0f}" if res[reuse]["through"] else "-"
        rows.append(f"| kvReuse={str(reuse).lower()} | {m['cold']:.0f} | {m['cold_prefill']:.0f} | {through} | "
                    f"{m['other']:.0f} | {m['other_prefill']:.0f} | {m['other'] / m['cold']:.2f} |")
    section = "\n".join([
        START,
        f"Command: `.venv/bin/python benchmarks/bench_server.py --sites {args.sites} --typed {args.typed}`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}. Model: smollm2-135m (3 drafts, timeBudgetMs 10000, other "
        f"settings default). {len(res[True]['cold'])} sites x {args.typed} rounds of typing; medians of "
        "client-side wall-clock.",
        "",
        "| server | first request ms | tokens prefilled | typed the suggested character ms | typed another "
        "character ms | tokens prefilled | ratio to first |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"With reuse, a request after typing a character that no draft predicted takes "
        f"{med[True]['other'] / med[True]['cold']:.2f}x the first request's time "
        f"({med[True]['other'] / med[False]['other']:.2f}x the same request without reuse); typing what the "
        f"suggestion shows is answered from the previous drafts in {med[True]['through']:.0f} ms.",
        END,
    ])
    print(section)
    if args.write:
        doc = args.write.read_text()
        if START in doc:
            doc = doc[: doc.index(START)] + section + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip() + "\n\n## Language server latency (issue 4)\n\n" + section + "\n"
        args.write.write_text(doc)


def compare_backends(backends: list[str], n_sites: int, typed: int, rounds: int = 2) -> None:
    """The same sites on each backend's server, the backends in turn, `rounds` times (a
    server a round and backend: each warms up over all the sites, as an editor's would)."""
    res: dict[str, dict[str, list[float]]] = {b: {} for b in backends}
    for r in range(rounds):
        for b in backends:
            print(f"round {r + 1}, backend {b}", file=sys.stderr)
            for k, v in asyncio.run(run(True, n_sites, typed, b)).items():
                res[b].setdefault(k, []).extend(v)
    med = {b: {k: statistics.median(v) for k, v in r.items() if v} for b, r in res.items()}
    ref = med[backends[0]]
    print(f"Command: `.venv/bin/python benchmarks/bench_server.py --backends {','.join(backends)} "
          f"--sites {n_sites} --typed {typed}`  ")
    print(f"Machine: {machine()}  ")
    print(f"Date: {datetime.date.today().isoformat()}. Model: smollm2-135m (3 drafts, timeBudgetMs 10000, kvReuse on, "
          f"other settings default). {n_sites} sites x {typed} rounds of typing, the backends in turn, {rounds} times "
          "(a server each time); medians of client-side wall-clock.\n")
    print("| backend | first request ms | typed another character ms | vs " + backends[0] + " | typed the suggested "
          "character ms |")
    print("|---|---|---|---|---|")
    for b in backends:
        m = med[b]
        print(f"| {b} | {m['cold']:.0f} | {m['other']:.0f} | {ref['other'] / m['other']:.2f}x | "
              f"{m.get('through', float('nan')):.0f} |")


if __name__ == "__main__":
    main()
