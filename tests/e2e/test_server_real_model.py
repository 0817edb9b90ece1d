"""The bar of the language server, with the real default model: a plain LSP client asks for
inline completion at a dereference in real code, gets several distinct drafts with a sensible
first one, and a one-character edit is answered from the KV cache."""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shutil
import sys
import textwrap
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "lsp.cli", "serve"]))
async def smol_server(lsp_client: LanguageClient):
    # A bare client: no work-done progress, no configuration support, no position encodings.
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(), initialization_options={"drafts": 3, "timeBudgetMs": 10000}))
    yield
    await lsp_client.shutdown_session()


async def status(client: LanguageClient) -> dict[str, Any]:
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="draftls.status"))


async def ready(client: LanguageClient) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while (s := await status(client))["state"] not in ("ready", "failed"):
            await asyncio.sleep(0.2)
        return s
    s = await asyncio.wait_for(poll(), 300)
    assert s["state"] == "ready", s["error"]
    return s


def real_code_at_deref() -> tuple[str, int, int]:
    """shutil's own source, cut right after the first `os.path.` past its imports (rest of the line removed)."""
    lines = inspect.getsource(shutil).splitlines(keepends=True)
    n = next(i for i, l in enumerate(lines) if i > 80 and "os.path." in l)
    col = lines[n].index("os.path.") + len("os.path.")
    lines[n] = lines[n][:col] + "\n"
    return "".join(lines), n, col


async def test_inline_completion_at_a_dereference_in_real_code(smol_server: LanguageClient):
    await ready(smol_server)
    text, line, col = real_code_at_deref()
    uri = "file:///tmp/draftls_real/shutil_copy.py"
    smol_server.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))

    def ask(character: int):
        return smol_server.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))

    first = (await ask(col)).items
    texts = [i.insert_text for i in first]
    assert len(texts) >= 2 and len(set(texts)) == len(texts)
    # Sensible: each draft completes the line into valid Python, and with the monitors on (the
    # default) every draft names a real os.path attribute. (Off, this model puts an invented
    # `getaccess` first here.)
    prefix = text.splitlines()[line][:col]
    for t in texts:
        ast.parse(textwrap.dedent(prefix + t.splitlines()[0]).replace("return ", "", 1))
    idents = [m.group() for t in texts if (m := re.match(r"\w+", t))]
    assert len(idents) == len(texts) and all(hasattr(os.path, i) for i in idents), texts
    cold = (await status(smol_server))["last"]
    assert cold["prefilled_tokens"] > 500  # the whole window was read

    # Type the first character of the suggestion: the rest of the drafts is the answer, at once.
    typed = texts[0][0]
    version = 1

    def type_char(character: int, c: str) -> None:
        nonlocal version
        version += 1
        smol_server.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(line, character), types.Position(line, character)), text=c)]))

    type_char(col, typed)
    second = (await ask(col + 1)).items
    assert second and all(i.range.start == types.Position(line, col) for i in second)
    assert second[0].insert_text == texts[0]  # the typed word plus the rest of the same draft
    assert (await status(smol_server))["last"].get("typed_through") == 1
    # Type something no draft predicted: the model runs again, from the KV cache.
    other = next(c for c in "qzxkv" if not any(t[1:2] == c for t in texts))
    type_char(col + 1, other)
    third = (await ask(col + 2)).items
    assert all(i.insert_text.startswith(typed + other) for i in third)
    warm = (await status(smol_server))["last"]
    assert "typed_through" not in warm
    assert warm["reused_tokens"] > 500 and warm["prefilled_tokens"] < 10
