"""Typing bursts against the real server (default model) over stdio: latency after a burst,
stale requests, and memory over a long run.

    .venv/bin/python benchmarks/soak.py [--bursts 40] [--interval-ms 60] [--pause-ms 0] [--model smollm2-135m]
        [--settings '{"monitors": false}'] [--out FILE.json]

Each burst types the rest of a real line of a dev-workspace file, one character per
didChange, each followed by an inlineCompletion request that cancels the one before (as
VS Code and Neovim do). The last request of the burst is awaited and timed from its send.
The baseline is the same kind of request sent alone to an idle server. Resident memory is
read from /proc after every burst.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import machine  # noqa: E402
from tests.e2e.rpc import StdioServer  # noqa: E402

WORKSPACE = ROOT / "benchmarks" / "workspace"
FILES = ["flask/app.py", "markdown/core.py", "starlette/routing.py", "tomlkit/container.py"]
CANCELLED = -32800


def pick_lines(text: str, rng: random.Random, n: int) -> list[tuple[int, int]]:
    """(line, column) pairs: code lines of 25+ characters, cut somewhere in the first half."""
    lines = text.split("\n")
    good = [i for i, s in enumerate(lines) if len(s.strip()) >= 25 and s.isascii() and not s.strip().startswith("#")]
    return [(i, len(lines[i]) - len(lines[i].lstrip()) + rng.randint(0, len(lines[i].strip()) // 2))
            for i in rng.sample(good, n)]


def set_line(server: StdioServer, uri: str, version: int, line: int, old: str, new: str) -> None:
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
        {"range": {"start": {"line": line, "character": 0}, "end": {"line": line, "character": len(old)}},
         "text": new}]})


def inline(server: StdioServer, uri: str, line: int, character: int) -> int:
    return server.start("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        "context": {"triggerKind": 2}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bursts", type=int, default=40)
    ap.add_argument("--interval-ms", type=float, default=60, help="time between keystrokes")
    ap.add_argument("--pause-ms", type=float, default=0, help="time between bursts (the user reads; the server is idle)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", default="{}", help='initializationOptions as JSON, e.g. \'{"monitors": false}\'')
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    server = StdioServer("--model", args.model)
    server.initialize(json.loads(args.settings), root=WORKSPACE)
    assert server.wait_ready(600)["state"] == "ready"
    docs = {}
    for i, f in enumerate(FILES):
        uri = (WORKSPACE / f).as_uri()
        docs[uri] = (WORKSPACE / f).read_text().split("\n")
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": "\n".join(docs[uri])}})
    versions = dict.fromkeys(docs, 1)
    time.sleep(5)  # jedi reads the files (didOpen warm-up), as it would while the user looks at them

    def cut(uri: str, line: int, col: int) -> str:
        """Cut a line at col (the rest is what gets typed); the original text comes back later."""
        full = docs[uri][line]
        versions[uri] += 1
        set_line(server, uri, versions[uri], line, full, full[:col])
        return full

    def restore(uri: str, line: int, now: str, full: str) -> None:
        versions[uri] += 1
        set_line(server, uri, versions[uri], line, now, full)

    # Baseline: one request at a time to an idle server, at a fresh cut of a line.
    single = []
    for uri in docs:
        for line, col in pick_lines("\n".join(docs[uri]), rng, 3):
            full = cut(uri, line, col)
            time.sleep(0.5)
            t0 = time.perf_counter()
            answer = server.wait(inline(server, uri, line, col), 120)
            single.append((time.perf_counter() - t0) * 1000)
            assert "result" in answer, answer
            restore(uri, line, full[:col], full)
    rss = [server.rss_kb()[0]]
    after, keys, sent_at_start = [], 0, server.status()
    t_start = time.monotonic()
    uris = list(docs)
    for b in range(args.bursts):
        uri = uris[b % len(uris)]
        (line, col), = pick_lines("\n".join(docs[uri]), rng, 1)
        full = cut(uri, line, col)
        typed = full[col : col + rng.randint(8, 30)]
        last = None
        for j, ch in enumerate(typed):
            versions[uri] += 1
            at = {"line": line, "character": col + j}
            server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": versions[uri]},
                                                     "contentChanges": [{"range": {"start": at, "end": at}, "text": ch}]})
            if last is not None:
                server.cancel(last)
            t_last = time.perf_counter()
            last = inline(server, uri, line, col + j + 1)
            keys += 1
            time.sleep(args.interval_ms / 1000)
        answer = server.wait(last, 120)
        after.append((time.perf_counter() - t_last) * 1000)
        assert "result" in answer, answer
        restore(uri, line, full[: col + len(typed)], full)
        rss.append(server.rss_kb()[0])
        time.sleep(args.pause_ms / 1000)
    status = server.status()
    peak = server.rss_kb()[1]
    server.close()
    result = {
        "machine": machine(), "date": time.strftime("%Y-%m-%d"), "model": args.model,
        "command": "benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "bursts": args.bursts, "keystrokes": keys, "interval_ms": args.interval_ms, "pause_ms": args.pause_ms,
        "minutes": round((time.monotonic() - t_start) / 60, 1),
        "single_p50_ms": statistics.median(single), "single_p90_ms": sorted(single)[int(0.9 * len(single))],
        "after_burst_p50_ms": statistics.median(after), "after_burst_p90_ms": sorted(after)[int(0.9 * len(after))],
        "decoded": status["requests"] - sent_at_start["requests"],
        "cancelled": status["cancelled"] - sent_at_start["cancelled"],
        "stale_decoded": status["staleDecoded"],
        "rss_mb_first_burst": round(rss[1] / 1024, 1), "rss_mb_end": round(rss[-1] / 1024, 1),
        "rss_mb_max": round(max(rss) / 1024, 1), "peak_rss_mb": round(peak / 1024, 1),
        "rss_mb_series": [round(r / 1024, 1) for r in rss], "sizes": status["sizes"],
        "gc": status.get("gc"), "after_burst_ms": [round(a) for a in after], "single_ms": [round(x) for x in single],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mb_series"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
