"""Fuzzing the real server over stdio (tiny model) with hypothesis.

Random sessions of didOpen, incremental and full didChange (surrogate pairs, emoji, CRLF,
lone CR, tabs, form feeds, empty and large documents), completion and inlineCompletion at
random, even invalid, positions, cancellations and didClose; then malformed JSON-RPC. The
server must answer every request with a result or a proper JSON-RPC error, and its copy of
each document must stay equal to the client's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.rpc import StdioServer

OPTIONS = {"maxNewTokens": 4, "drafts": 2, "timeBudgetMs": 3000}
FUZZ = settings(max_examples=30, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
_uris = itertools.count()

# Pieces of text: code, whitespace and line breaks of every kind, and characters whose UTF-16
# length differs from their code point count. Form feed and U+2028 are text to an LSP client,
# not line breaks.
PIECES = st.sampled_from(["def f(x):", "    return x.", "import os", "😀", "é", "中文", "\t", " ", "\n",
                          "\r\n", "\r", "\x0c", "\u2028", "(", ")", "'", '"""', "#", "a", "self.b", "𝔘"])
TEXT = st.lists(PIECES, max_size=30).map("".join)


# -- the client's copy, by LSP's rules (written apart from the server's code on purpose) --

def lines(text: str) -> list[tuple[int, int]]:
    """(start, end) string offsets of each line without its break; only \\n, \\r\\n, \\r break."""
    spans, start = [], 0
    for m in re.finditer(r"\r\n|\r|\n", text):
        spans.append((start, m.start()))
        start = m.end()
    return spans + [(start, len(text))]


def offset(text: str, line: int, character: int) -> int:
    """A UTF-16 position as a string offset; past a line's end or the last line, it clamps."""
    spans = lines(text)
    if line >= len(spans):
        return len(text)
    start, end = spans[line]
    units = 0
    for i in range(start, end):
        if units >= character:
            return i
        units += 2 if ord(text[i]) > 0xFFFF else 1
    return end


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def position(text: str, data: st.DataObject, past: bool) -> dict[str, int]:
    """A position on a character boundary, or (past) one beyond the line or the document."""
    spans = lines(text)
    line = data.draw(st.integers(0, len(spans) - 1 + (3 if past else 0)))
    if line >= len(spans):
        return {"line": line, "character": data.draw(st.integers(0, 5))}
    start, end = spans[line]
    bounds = [0] + list(itertools.accumulate(2 if ord(c) > 0xFFFF else 1 for c in text[start:end]))
    if past and data.draw(st.booleans()):
        return {"line": line, "character": bounds[-1] + data.draw(st.integers(1, 50))}
    return {"line": line, "character": data.draw(st.sampled_from(bounds))}


# -- the server -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[StdioServer]:
    s = StdioServer("--model", "tiny")
    s.initialize(OPTIONS)
    assert s.wait_ready()["state"] == "ready"
    yield s
    assert s.close() == 0, b"".join(s.stderr[-30:]).decode("utf-8", "replace")


def check_answer(answer: dict[str, Any], method: str) -> None:
    """A proper JSON-RPC answer: an error with an integer code and a message, or a result of the method's shape."""
    if "error" in answer:
        assert isinstance(answer["error"]["code"], int) and isinstance(answer["error"]["message"], str), answer
        return
    result = answer["result"]
    if method == "textDocument/inlineCompletion":
        assert isinstance(result["items"], list), answer
        for item in result["items"]:
            assert isinstance(item["insertText"], str) and item["insertText"].strip(), answer
    else:
        assert isinstance(result["isIncomplete"], bool) and isinstance(result["items"], list), answer
        for item in result["items"]:
            assert isinstance(item["textEdit"]["newText"], str), answer


def same_document(server: StdioServer, uri: str, text: str, version: int) -> None:
    view = server.status(uri)["document"]
    assert view == {"version": version, "length": utf16_len(text),
                    "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}, (repr(text), view)


@FUZZ
@given(initial=TEXT, data=st.data())
def test_random_sessions_keep_the_documents_equal_and_answer_every_request(
        server: StdioServer, initial: str, data: st.DataObject) -> None:
    uri = f"file:///fuzz/doc{next(_uris)}.py"
    text, version = initial, 1
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": text}})
    asked: list[tuple[int, str]] = []
    ops = data.draw(st.lists(st.sampled_from(["edit", "edit", "edit", "full", "inline", "complete", "cancel",
                                               "check"]), min_size=1, max_size=12))
    for op in ops:
        if op == "edit":
            a, b = position(text, data, past=False), position(text, data, past=data.draw(st.booleans()))
            (sa, sb) = sorted([offset(text, **a), offset(text, **b)])
            if offset(text, **a) > offset(text, **b):
                a, b = b, a
            new = data.draw(TEXT)
            text, version = text[:sa] + new + text[sb:], version + 1
            server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                     "contentChanges": [{"range": {"start": a, "end": b},
                                                                         "text": new}]})
        elif op == "full":
            text, version = data.draw(TEXT), version + 1
            server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                     "contentChanges": [{"text": text}]})
        elif op in ("inline", "complete"):
            method = "textDocument/inlineCompletion" if op == "inline" else "textDocument/completion"
            params: dict[str, Any] = {"textDocument": {"uri": uri}, "position": position(text, data, past=True)}
            if op == "inline":
                params["context"] = {"triggerKind": 1}
            asked.append((server.start(method, params), method))
        elif op == "cancel" and asked:
            server.cancel(asked[-1][0])
        else:
            same_document(server, uri, text, version)
    for msg_id, method in asked:
        check_answer(server.wait(msg_id, timeout=60), method)
    same_document(server, uri, text, version)
    server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert server.status(uri).get("document") is None


def test_a_large_document_and_an_empty_one_stay_in_step(server: StdioServer) -> None:
    """200,000 characters with every kind of line break, edited at both ends, and an emptied one."""
    uri = "file:///fuzz/large.py"
    text = "x = '😀'\r\n\tdef f():\r    return 1\n\x0c" * 8000
    server.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": text}})
    n = len(lines(text))
    edits = [({"line": n - 1, "character": 0}, {"line": n + 5, "character": 9}, "tail = 1\n"),
             ({"line": 0, "character": 6}, {"line": 2, "character": 4}, "🎉")]
    for v, (a, b, new) in enumerate(edits, 2):
        text = text[: offset(text, **a)] + new + text[offset(text, **b):]
        server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": v},
                                                 "contentChanges": [{"range": {"start": a, "end": b}, "text": new}]})
    check_answer(server.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": n - 1, "character": 8}, "context": {"triggerKind": 1}}),
        "textDocument/inlineCompletion")
    same_document(server, uri, text, 3)
    end = {"line": n + 10, "character": 0}
    server.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 4}, "contentChanges": [
        {"range": {"start": {"line": 0, "character": 0}, "end": end}, "text": ""}]})
    same_document(server, uri, "", 4)
    check_answer(server.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": 3, "character": 3}}), "textDocument/completion")


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
METHODS = st.sampled_from(["textDocument/inlineCompletion", "textDocument/completion", "workspace/executeCommand",
                           "textDocument/didOpen", "textDocument/didChange", "$/cancelRequest", "no/such/method",
                           "textDocument/hover", "completionItem/resolve"])


@FUZZ
@given(method=METHODS, params=JSON | st.fixed_dictionaries({"textDocument": JSON, "position": JSON}))
def test_requests_with_wrong_params_get_an_answer(server: StdioServer, method: str, params: Any) -> None:
    check = server.wait(server.start(method, params), timeout=60)
    assert ("result" in check) != ("error" in check), check
    if "error" in check:
        assert check["error"]["code"] in (-32600, -32601, -32602, -32603, -32700), check


@FUZZ
@given(body=st.binary(min_size=1, max_size=60) | JSON.map(lambda v: json.dumps(v).encode()))
def test_malformed_messages_get_errors_with_a_null_id_and_the_server_keeps_serving(
        server: StdioServer, body: bytes) -> None:
    before = len(server.unmatched)
    server.send_raw(body)
    server.status()  # answered after the malformed message: the server still serves
    try:
        value = json.loads(body)
    except ValueError:
        value, expect = None, -32700  # not JSON: "Parse error"
    else:
        expect = -32600  # JSON, but not a JSON-RPC 2.0 message: "Invalid Request"
    new = server.unmatched[before:]
    assert [m["error"]["code"] for m in new] == [expect], (body, new)
    given_id = value.get("id") if isinstance(value, dict) else None
    assert new[0]["id"] == (given_id if isinstance(given_id, (int, str)) else None), (body, new)
