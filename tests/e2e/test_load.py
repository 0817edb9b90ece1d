"""Load: a typing burst against the real server over stdio (tiny model), each keystroke
cancelling the request before it, as editors do.

Checked without wall-clock assertions: every request is answered (drafts or "cancelled"),
no stale request is decoded to its end, the last request gets drafts for the final text,
every cache stays within its limit, and resident memory does not grow from one burst to the
next. The timings of the same scenario with the default model are in BENCHMARKS.md
(benchmarks/soak.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.rpc import StdioServer

REQUEST_CANCELLED = -32800
CODE = (
    "from pkg.shapes import Square\n\n\n"
    "def area_sum(shapes):\n"
    "    total = 0\n"
    "    for shape in shapes:\n"
    "        total += shape.area()\n"
    "    sq = Square(3)\n"
    "    return total + sq.side * 2  # done\n"
)


def workspace(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "shapes.py").write_text(
        "class Square:\n    def __init__(self, side):\n        self.side = side\n\n"
        "    def area(self):\n        return self.side ** 2\n")
    return root


def type_text(server: StdioServer, uri: str, text: str, typed: str, version: int) -> tuple[str, int, list[int]]:
    """Type `typed` at the end of `text`, one character per didChange, each followed by an
    inlineCompletion request that cancels the one before; (text, version, request ids)."""
    ids: list[int] = []
    for ch in typed:
        lines = text.split("\n")
        at = {"line": len(lines) - 1, "character": len(lines[-1])}  # ASCII: UTF-16 units are characters
        text, version = text + ch, version + 1
        server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                 "contentChanges": [{"range": {"start": at, "end": at}, "text": ch}]})
        if ids:
            server.cancel(ids[-1])
        lines = text.split("\n")
        ids.append(server.start("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": len(lines) - 1, "character": len(lines[-1])},
            "context": {"triggerKind": 2}}))
    return text, version, ids


def test_typing_bursts_cancel_stale_requests_answer_the_last_and_keep_memory_flat(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    server = StdioServer("--model", "tiny")
    try:
        server.initialize({"maxNewTokens": 24, "drafts": 3, "timeBudgetMs": 10000}, root=root)
        assert server.wait_ready()["state"] == "ready"
        uri = (root / "main.py").as_uri()
        server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                                "text": ""}})
        text, version, rss = "", 1, []
        sent, drafts_last = 0, []
        for burst in range(4):
            text, version, ids = type_text(server, uri, text, CODE, version)
            sent += len(ids)
            answers = [server.wait(i, timeout=120) for i in ids]
            for a in answers[:-1]:
                assert "result" in a or a["error"]["code"] == REQUEST_CANCELLED, a
            assert "result" in answers[-1], answers[-1]  # the last request is never the stale one
            drafts_last.append([item["insertText"] for item in answers[-1]["result"]["items"]])
            rss.append(server.rss_kb()[0])
        status = server.status(uri)
        # Stale requests stop within a token; none runs to the end of its draft.
        assert status["staleDecoded"] == 0, status
        # Most requests went stale while the burst went on and were never decoded.
        assert status["requests"] < sent / 2, (status["requests"], sent)
        assert all(d for d in drafts_last), drafts_last  # the final text always got drafts
        assert status["document"]["length"] == len(text)
        for name, (current, limit) in status["sizes"].items():
            assert current <= limit, (name, current, limit)
        # Memory: the first burst loads jedi, parso and the caches; after that it stays flat.
        assert max(rss[1:]) - rss[1] < 48 * 1024, rss
    finally:
        assert server.close() == 0
