"""The real server over stdio, driven by pytest-lsp's client: protocol, positions, cancellation, settings, bad input.

One server with the ls_tiny random model serves most tests (its drafts are noise, but they
are distinct and non-empty, which is what the protocol needs); the real default model
checks the answers themselves.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import Future
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from models.loading import resolve_backend

SERVER = [sys.executable, "-m", "lsp.cli", "serve"]
INIT_OPTIONS = {"maxNewTokens": 12, "drafts": 3, "timeBudgetMs": 60000, "bogusSetting": 1}


def _caps(encodings: list[str] | None = None) -> types.ClientCapabilities:
    caps = client_capabilities("visual-studio-code")
    caps.general = types.GeneralClientCapabilities(position_encodings=encodings) if encodings else caps.general
    return caps


async def status(client: LanguageClient) -> dict[str, Any]:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="draftls.status"))


async def wait_state(client: LanguageClient, *states: str, timeout: float = 300) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while (s := await status(client))["state"] not in states:
            await asyncio.sleep(0.1)
        return s

    return await asyncio.wait_for(poll(), timeout)


async def configure(client: LanguageClient, **settings: Any) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"draftls": settings}))
    await status(client)  # notifications are handled in order: once this answers, the settings are in


_versions: dict[str, int] = {}


def open_doc(client: LanguageClient, uri: str, text: str) -> None:
    _versions[uri] = 1
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))


def edit(client: LanguageClient, uri: str, start: tuple[int, int], end: tuple[int, int], new: str) -> None:
    _versions[uri] += 1
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=_versions[uri]),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(*start), types.Position(*end)), text=new)],
    ))


def inline(client: LanguageClient, uri: str, line: int, character: int):
    return client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))


def raw_request(client: LanguageClient, method: str, params: Any, msg_id: str) -> asyncio.Future[Any]:
    """Send params exactly as given (the typed client API would refuse malformed ones)."""
    fut: Future[Any] = Future()
    client.protocol._request_futures[msg_id] = fut
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return asyncio.wrap_future(fut)


def raw_bytes(client: LanguageClient, body: bytes) -> None:
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER + ["--model", "tiny"]))
async def ls_tiny(lsp_client: LanguageClient):
    result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=_caps(), initialization_options=INIT_OPTIONS, root_uri="file:///tmp"))
    lsp_client.init_result = result  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_initialize_advertises_inline_completion_and_incremental_sync(ls_tiny: LanguageClient):
    caps = ls_tiny.init_result.capabilities
    assert caps.inline_completion_provider
    assert caps.completion_provider is not None and "." in caps.completion_provider.trigger_characters
    sync = caps.text_document_sync
    assert getattr(sync, "change", sync) == types.TextDocumentSyncKind.Incremental
    assert {"draftls.status", "draftls.accepted"} <= set(caps.execute_command_provider.commands)
    assert caps.position_encoding == types.PositionEncodingKind.Utf16
    assert ls_tiny.init_result.server_info.name == "draftls"


async def test_a_saved_file_makes_static_analysis_read_the_workspace_again(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    sync = ls_tiny.init_result.capabilities.text_document_sync
    assert getattr(sync, "save", None)  # clients send didSave only where the server asks for it
    before = (await status(ls_tiny))["analysis"]["invalidated"]
    ls_tiny.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri="file:///tmp/saved.py")))
    assert (await status(ls_tiny))["analysis"]["invalidated"] == before + 1


async def test_model_loads_with_progress_and_init_options_apply(ls_tiny: LanguageClient):
    s = await wait_state(ls_tiny, "ready")
    assert s["model"] == "tiny" and s["backend"] == resolve_backend("auto") and s["device"] == "cpu"
    assert s["settings"]["maxNewTokens"] == 12 and s["settings"]["drafts"] == 3
    kinds = [[type(v).__name__ for v in values] for values in ls_tiny.progress_reports.values()]
    # Begin ... End; reports between them where the load has steps to show (a first ONNX export).
    assert any(k[0] == "WorkDoneProgressBegin" and k[-1] == "WorkDoneProgressEnd" for k in kinds), kinds
    assert any("bogusSetting" in m.message for m in ls_tiny.log_messages)


async def test_inline_completion_gives_distinct_drafts_at_the_cursor(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    uri = "file:///tmp/draftls_inline.py"
    open_doc(ls_tiny, uri, "import os\n\nx = 1\ny = ")
    result = await inline(ls_tiny, uri, 3, 4)
    items = result.items
    texts = [i.insert_text for i in items]
    assert 2 <= len(items) <= 3
    assert len(set(texts)) == len(texts) and all(t.strip() for t in texts)
    for item in items:
        assert item.range == types.Range(types.Position(3, 4), types.Position(3, 4))
        assert item.command is not None and item.command.command == "draftls.accepted"
    s = await status(ls_tiny)
    assert s["requests"] >= 1 and s["shown"] >= len(items) and s["latency_ms"]["p50"] > 0
    # Full garbage collections wait for a quiet moment: after a completion, what lived is frozen.
    assert s["gc"]["policy"] is True and s["gc"]["frozen"] > 0


@pytest.mark.parametrize("decoder", ["superposed", "sampling"])
async def test_other_decoders_give_distinct_drafts_too(ls_tiny: LanguageClient, decoder: str):
    await wait_state(ls_tiny, "ready")
    await configure(ls_tiny, decoder=decoder, drafts=3, mode="line", maxNewTokens=8)
    try:
        uri = f"file:///tmp/draftls_{decoder}.py"
        open_doc(ls_tiny, uri, "import os\n\nx = 1\ny = ")
        texts = [i.insert_text for i in (await inline(ls_tiny, uri, 3, 4)).items]
        assert 1 <= len(texts) <= 3
        assert len(set(texts)) == len(texts) and all(t.strip() and "\n" not in t for t in texts)
        assert (await status(ls_tiny))["settings"]["decoder"] == decoder
    finally:
        await configure(ls_tiny, decoder="greedy", maxNewTokens=12, mode="auto")


async def test_switching_the_backend_reloads_and_serves(ls_tiny: LanguageClient):
    """From the default (`auto`: ONNX Runtime where installed) to the other backend and back."""
    pytest.importorskip("onnxruntime")
    first = (await wait_state(ls_tiny, "ready"))["backend"]
    other = "torch" if first == "onnx" else "onnx"
    await configure(ls_tiny, backend=other)
    try:
        s = await wait_state(ls_tiny, "ready", "failed")
        assert s["state"] == "ready" and s["backend"] == other
        uri = f"file:///tmp/draftls_{other}.py"
        open_doc(ls_tiny, uri, "import os\n\nx = 1\ny = ")
        texts = [i.insert_text for i in (await inline(ls_tiny, uri, 3, 4)).items]
        assert texts and all(t.strip() for t in texts)
    finally:
        await configure(ls_tiny, backend="auto")
        assert (await wait_state(ls_tiny, "ready"))["backend"] == first


async def test_mid_word_range_covers_the_typed_part(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    uri = "file:///tmp/draftls_midword.py"
    open_doc(ls_tiny, uri, "import os\npath = os.path.jo")
    items = (await inline(ls_tiny, uri, 1, 17)).items
    assert items
    for item in items:
        assert item.range == types.Range(types.Position(1, 15), types.Position(1, 17))
        assert item.insert_text.startswith("jo") and len(item.insert_text) > 2


async def test_completion_items_carry_text_edits(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    uri = "file:///tmp/draftls_completion.py"
    open_doc(ls_tiny, uri, "def f(a, b):\n    return a.")
    result = await ls_tiny.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(1, 13)))
    assert result.is_incomplete
    assert result.items
    sort_texts = [i.sort_text for i in result.items]
    assert sort_texts == sorted(sort_texts)
    for item in result.items:
        assert item.text_edit.range == types.Range(types.Position(1, 13), types.Position(1, 13))
        assert item.text_edit.new_text.strip()
        assert item.label.strip() and item.label.split(" …")[0] in item.text_edit.new_text


async def test_utf16_positions_and_incremental_edits_past_non_ascii(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    uri = "file:///tmp/draftls_utf16.py"
    line = 's = "😀é😀" + na'
    open_doc(ls_tiny, uri, f"# ünïcode\n{line}")
    # The client counts UTF-16 units: each emoji is two.
    end = utf16_len(line)
    assert end == len(line) + 2
    edit(ls_tiny, uri, (1, end), (1, end), "me")  # an incremental insert after the emoji
    items = (await inline(ls_tiny, uri, 1, end + 2)).items
    assert items
    for item in items:
        # The typed word is "name" (4 units back from the cursor); a codepoint-counting
        # server would be off by two and cut into the string literal.
        assert item.range == types.Range(types.Position(1, end - 2), types.Position(1, end + 2))
        assert item.insert_text.startswith("name")


async def test_positions_past_the_end_and_unknown_documents_answer_sanely(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    uri = "file:///tmp/draftls_bounds.py"
    open_doc(ls_tiny, uri, "a = 1\nb = a +")
    past_line = (await inline(ls_tiny, uri, 1, 500)).items  # clamps to the end of line 1
    assert past_line and all(i.range.end == types.Position(1, 7) for i in past_line)
    past_doc = (await inline(ls_tiny, uri, 40, 3)).items  # clamps to the end of the document
    assert all(i.range.end == types.Position(1, 7) for i in past_doc)
    assert not (await inline(ls_tiny, "file:///tmp/never_opened.py", 0, 0)).items
    assert (await status(ls_tiny))["state"] == "ready"


async def test_malformed_requests_get_errors_and_the_server_keeps_serving(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    for i, params in enumerate([{"textDocument": 5}, {"textDocument": {"uri": "file:///x.py"},
                                 "position": {"line": "x", "character": 0}}, None, [1, 2]]):
        with pytest.raises(JsonRpcException):
            await raw_request(ls_tiny, "textDocument/inlineCompletion", params, f"bad-{i}")
    raw_bytes(ls_tiny, b"{this is not json")
    raw_bytes(ls_tiny, '{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"x": "é"}}'.encode("latin-1"))
    with pytest.raises(JsonRpcException):
        await ls_tiny.workspace_execute_command_async(types.ExecuteCommandParams(command="draftls.nope"))
    # Bad notifications are logged, not fatal.
    ls_tiny.protocol._send_data({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": {"uri": 3}}})
    configure_raw = {"settings": {"draftls": ["not", "an", "object"]}}
    ls_tiny.protocol._send_data({"jsonrpc": "2.0", "method": "workspace/didChangeConfiguration", "params": configure_raw})
    uri = "file:///tmp/draftls_after_bad.py"
    open_doc(ls_tiny, uri, "value = ")
    assert (await inline(ls_tiny, uri, 0, 8)).items
    assert (await status(ls_tiny))["state"] == "ready"


async def test_settings_changes_apply_and_bad_values_fall_back(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    await configure(ls_tiny, drafts="many", mode="line", maxNewTokens=6, earlyExit=True, decoder="superposed")
    s = (await status(ls_tiny))["settings"]
    assert s["drafts"] == 3 and s["mode"] == "line" and s["maxNewTokens"] == 6 and s["earlyExit"] is True
    assert any("drafts" in m.message and "default" in m.message for m in ls_tiny.log_messages)
    await configure(ls_tiny, drafts=1)
    uri = "file:///tmp/draftls_settings.py"
    open_doc(ls_tiny, uri, "total = ")
    items = (await inline(ls_tiny, uri, 0, 8)).items
    assert len(items) == 1
    await configure(ls_tiny, drafts=3, maxNewTokens=12, mode="auto", earlyExit=False, decoder="greedy")


async def test_cancel_request_stops_decoding(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    # A request that would decode 16 drafts x 1024 tokens (tens of seconds with the ls_tiny model).
    await configure(ls_tiny, drafts=16, maxNewTokens=1024, timeBudgetMs=600000, mode="block")
    uri = "file:///tmp/draftls_cancel.py"
    open_doc(ls_tiny, uri, "def long():\n    x = ")
    before = (await status(ls_tiny))["cancelled"]
    # (pytest-lsp's send_request_async is a coroutine: schedule it so the request goes out now.)
    fut = asyncio.ensure_future(ls_tiny.protocol.send_request_async(
        "textDocument/inlineCompletion", types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(1, 8),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)),
        msg_id="cancel-me"))
    await asyncio.sleep(1.5)  # let decoding start
    ls_tiny.protocol.notify("$/cancelRequest", types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException) as err:
        await fut
    assert err.value.code == -32800  # RequestCancelled
    await configure(ls_tiny, drafts=3, maxNewTokens=12, timeBudgetMs=60000, mode="auto")

    async def cancelled() -> dict[str, Any]:
        while (s := await status(ls_tiny))["cancelled"] == before:
            await asyncio.sleep(0.05)
        return s
    s = await asyncio.wait_for(cancelled(), 120)
    # It stopped long before its budget: a small part of 16 x 1024 tokens was decoded.
    assert s["lastCancelled"]["generated_tokens"] < 16 * 1024 // 4
    assert (await inline(ls_tiny, uri, 1, 8)).items  # and the server serves the next request


async def test_a_newer_request_supersedes_the_running_one_without_blocking_did_change(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    await configure(ls_tiny, drafts=16, maxNewTokens=1024, timeBudgetMs=600000, mode="block")
    uri = "file:///tmp/draftls_stale.py"
    open_doc(ls_tiny, uri, "def slow():\n    y = ")
    old = asyncio.ensure_future(inline(ls_tiny, uri, 1, 8))
    await asyncio.sleep(1.0)
    # The event loop is free while the model works: edits and commands go through.
    edit(ls_tiny, uri, (1, 8), (1, 8), "1")
    await configure(ls_tiny, drafts=2, maxNewTokens=6, timeBudgetMs=60000, mode="auto")
    assert not old.done()
    new = await inline(ls_tiny, uri, 1, 9)
    assert not (await old).items  # the stale request answered empty
    assert new.items and all(i.range.end == types.Position(1, 9) for i in new.items)
    await configure(ls_tiny, drafts=3, maxNewTokens=12)


async def test_accepted_command_counts(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    before = await status(ls_tiny)
    uri = "file:///tmp/draftls_accept.py"
    open_doc(ls_tiny, uri, "z = ")
    item = (await inline(ls_tiny, uri, 0, 4)).items[0]
    await ls_tiny.workspace_execute_command_async(types.ExecuteCommandParams(
        command=item.command.command, arguments=item.command.arguments))
    after = await status(ls_tiny)
    assert after["accepted"] == before["accepted"] + 1
    assert after["acceptance"] == after["accepted"] / after["answered"]


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER + ["--model", "/nonexistent/model"]))
async def broken(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=_caps(["utf-8", "utf-16"]), root_uri="file:///tmp"))
    yield
    await lsp_client.shutdown_session()


async def test_a_model_that_fails_to_load_leaves_a_working_server(broken: LanguageClient):
    s = await wait_state(broken, "failed")
    assert "nonexistent" in s["error"]
    assert any(m.type == types.MessageType.Error and "nonexistent" in m.message for m in broken.messages)
    assert s["positionEncoding"] == "utf-8"  # the client's first choice
    uri = "file:///tmp/draftls_broken.py"
    open_doc(broken, uri, "import os\né = 1\nq = é")
    assert not (await inline(broken, uri, 2, 5)).items
    # Without a model, jedi still reads the opened document (as it does while a model loads).
    for _ in range(100):
        if (await status(broken))["analysis"]["warmed"] == 1:
            break
        await asyncio.sleep(0.1)
    assert (await status(broken))["analysis"]["warmed"] == 1
    # Fixing the setting loads the model; requests meanwhile answer empty.
    await configure(broken, model="tiny")
    assert not (await inline(broken, uri, 2, 5)).items
    s = await wait_state(broken, "ready")
    assert s["model"] == "tiny" and s["analysis"]["warmed"] == 1  # loading a model keeps the analysis
    items = (await inline(broken, uri, 2, 6)).items  # UTF-8: "q = é" is 6 bytes
    assert items and all(i.range == types.Range(types.Position(2, 4), types.Position(2, 6)) for i in items)
    assert all(i.insert_text.startswith("é") for i in items)


async def test_huge_documents_are_served_from_their_tail(ls_tiny: LanguageClient):
    await wait_state(ls_tiny, "ready")
    uri = "file:///tmp/draftls_huge.py"
    body = "".join(f"value_{i} = compute({i}, 'ü')\n" for i in range(150_000))  # ~4.5 MB
    open_doc(ls_tiny, uri, body + "result = value_")
    last = body.count("\n")
    items = (await inline(ls_tiny, uri, last, 15)).items
    assert items and all(i.insert_text.startswith("value_") for i in items)
    assert all(i.range.start == types.Position(last, 9) for i in items)
    # An edit at the top of the huge document is applied incrementally, and the text is intact.
    edit(ls_tiny, uri, (0, 0), (0, 0), "# header\n")
    items = (await inline(ls_tiny, uri, last + 1, 15)).items
    assert items and all(i.range.start == types.Position(last + 1, 9) for i in items)
    s = await status(ls_tiny)
    assert s["state"] == "ready" and s["last"]["prompt_tokens"] <= s["settings"]["contextTokens"] + 8
