"""The language server: pygls handlers that turn LSP requests into engine calls and back.

Handlers stay thin: find the document, convert the position, run the engine off the event
loop, convert the drafts. Nothing a handler raises reaches the client as a crash: it is
logged and the answer is empty.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest, JsonRpcParseError
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from decoding.engine import CompletionRequest, CompletionResult, Engine
from decoding.settings import Settings
from lsp import collector
from lsp.documents import LspWorkspace
from lsp.positions import Encoding, encoding_of, to_offset, to_position
from monitors.analysis import Analysis

log = logging.getLogger("draftls.server")

VERSION = "0.1.0"
STATUS_COMMAND = "draftls.status"
ACCEPTED_COMMAND = "draftls.accepted"
SECTION = "draftls"
IDLE_S = 2.0  # quiet time before a due full garbage collection runs (`lsp.collector`)
# Settings that need the model loaded again when they change.
LOAD_KEYS = ("model", "backend", "device", "load_quantize")  # Settings attributes a new model load follows

T = TypeVar("T")


@dataclass
class Stats:
    """What `draftls.status` reports about the requests served so far."""

    requests: int = 0  # completion requests answered with the model ready
    stale_decoded: int = 0  # superseded or cancelled requests whose decoding still ran to its end
    answered: int = 0  # of those, answered with at least one draft
    cancelled: int = 0
    errors: int = 0
    shown: int = 0  # drafts sent
    accepted: int = 0  # drafts the editor reported as accepted (the items' command)
    last: dict[str, float] | None = None  # timings of the last answered request
    last_cancelled: dict[str, float] | None = None  # timings of the last cancelled one, up to its stop

    def __post_init__(self) -> None:
        self.latency_ms: deque[float] = deque(maxlen=500)


def word_start(text: str, offset: int) -> int:
    """Start of the identifier part typed just before `offset` (== offset if none)."""
    i = offset
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    return i


class DraftProtocol(LanguageServerProtocol):
    """pygls' protocol, except that every request gets an answer, as JSON-RPC asks.

    pygls logs and drops a request whose params do not parse, a message that is not a JSON
    object, and any request after `shutdown`, which leaves the client waiting forever.
    """

    def structure_message(self, data: dict[str, Any]) -> Any:
        if "jsonrpc" in data and "id" in data and not {"result", "error"} & data.keys():
            if not isinstance(data.get("method"), str):  # neither a request nor a response
                self.answer_error(data["id"], JsonRpcInvalidRequest(), "a request needs a string 'method'")
                raise JsonRpcInvalidRequest()
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" in data and "method" in data and "result" not in data and "error" not in data:
                self.answer_error(data["id"], exc, f"malformed {data.get('method')!r} request")
            raise

    def handle_message(self, message: Any) -> None:
        if isinstance(message, (dict, list, str, int, float, bool)) or message is None:
            # JSON, but not a JSON-RPC 2.0 message (LSP has no batches): "Invalid Request".
            msg_id = message.get("id") if isinstance(message, dict) else None
            self.answer_error(msg_id, JsonRpcInvalidRequest(), f"not a JSON-RPC 2.0 message: {type(message).__name__}")
            return
        method = getattr(message, "method", None)
        if self._shutdown and method is not None and method != types.EXIT:
            if hasattr(message, "id"):  # a request after shutdown: refused, but answered
                self.answer_error(message.id, JsonRpcInvalidRequest(), "the server is shutting down")
            return
        super().handle_message(message)

    def answer_error(self, msg_id: Any, exc: JsonRpcException, why: str) -> None:
        if msg_id is not None and not isinstance(msg_id, (int, str)):
            msg_id = None  # an id of the wrong type cannot be echoed back
        err = exc.to_response_error()
        err.message = f"{err.message}: {why}"
        if msg_id is None:  # pygls would leave out the id, which JSON-RPC wants as null here
            self._send_data({"jsonrpc": "2.0", "id": None, "error": {"code": err.code, "message": err.message}})
        else:
            self._send_response(msg_id, error=err)


class DraftServer(LanguageServer):
    """A pygls server that owns one engine, loaded in the background."""

    def __init__(self, base: Settings | None = None):
        super().__init__("draftls", VERSION, protocol_cls=DraftProtocol)
        self.settings = base or Settings()
        self.state = "idle"  # idle -> loading -> ready | failed
        self.error: str | None = None
        self.engine: Engine | None = None
        # jedi outlives the engines (a reload keeps what it read), and reads documents opened
        # while the model loads: the first request then finds it warm.
        self.analysis = Analysis()
        self.loaded_key: tuple[str, ...] | None = None
        self.device = ""
        self.stats = Stats()
        # One worker thread does all model work (load and decode), so the engine is never
        # shared between threads and the event loop never waits on it.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draftls-model")
        self.pending: dict[str, threading.Event] = {}  # uri -> cancel flag of its running request
        self.load_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exit_code = 0  # of the process; a client that just goes away is no error
        self.last_done = time.monotonic()  # when the last completion ended (the idle collection waits)
        self.tidying = False  # an idle collection is queued on the worker

    # -- messages -------------------------------------------------------------

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls' hook for what its reading loop could not handle: a body that is not JSON gets
        "Parse error" with a null id (JSON-RPC); the rest was answered where it was found."""
        if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
            log.warning("a message that is not JSON: %s", error)
            try:
                self.protocol.answer_error(None, JsonRpcParseError(), str(error))  # type: ignore[attr-defined]
            except Exception:
                log.exception("cannot answer a parse error")
        else:
            log.info("message not handled: %r", error)

    def log_to_client(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        """window/logMessage, from any thread; never raises."""
        def send() -> None:
            try:
                self.window_log_message(types.LogMessageParams(type=kind, message=message))
            except Exception:  # the transport may be gone at shutdown
                pass

        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if threading.current_thread() is threading.main_thread():
            send()
        else:
            loop.call_soon_threadsafe(send)

    def show(self, message: str, kind: types.MessageType) -> None:
        try:
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        except Exception:
            log.exception("cannot show a message")

    # -- settings -------------------------------------------------------------

    def apply_settings(self, data: Any, origin: str) -> None:
        """Merge client settings (wire names) into the current ones; reload the model if needed."""
        if data is None:
            return
        if not isinstance(data, dict):
            log.warning("%s: settings must be an object, got %s; ignored", origin, type(data).__name__)
            return
        if isinstance(data.get(SECTION), dict):  # {"draftls": {...}} as well as the flat object
            data = data[SECTION]
        new, _ = Settings.from_dict(data, base=self.settings)  # warnings are logged (and forwarded)
        self.settings = new
        if self.loop is not None and self.state != "idle" and self.load_key() != self.loaded_key:
            self.start_loading()

    def load_key(self) -> tuple[str, ...]:
        return tuple(str(getattr(self.settings, k)) for k in LOAD_KEYS)

    async def pull_configuration(self) -> None:
        """Ask the client for the `draftls` section, if it can answer (VS Code, Neovim do)."""
        if not _capability(self.client_capabilities, "workspace", "configuration"):
            return
        try:
            result = await asyncio.wait_for(
                self.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
                ),
                timeout=5,
            )
        except Exception as e:  # a client that fails here still gets completions
            log.info("workspace/configuration failed: %r", e)
            return
        if result and isinstance(result[0], dict):
            self.apply_settings(result[0], "workspace/configuration")

    # -- model loading ----------------------------------------------------------

    def start_loading(self) -> None:
        """(Re)load the model in the background; requests answer empty until it is ready."""
        if self.load_task is not None and not self.load_task.done():
            self.load_task.cancel()  # the running load finishes in its thread; its result is dropped
        self.state, self.error, self.engine = "loading", None, None
        self.load_task = asyncio.ensure_future(self._load(self.load_key()))

    async def _load(self, key: tuple[str, ...]) -> None:
        from models.loading import load_model

        model, backend, device, quantize = key
        token = await self._progress_begin(f"draftls: loading {model}")
        t0 = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()

            def progress(message: str) -> None:  # from the loading thread (an ONNX export's steps)
                log.info("%s", message)
                loop.call_soon_threadsafe(self._progress_report, token, message)

            def load() -> Engine:
                return Engine(load_model(model, device=device, backend=backend, quantize=quantize, progress=progress),
                              self.analysis)

            engine = await loop.run_in_executor(self.worker, load)
        except asyncio.CancelledError:
            self._progress_end(token, "superseded")
            raise
        except Exception as e:  # a bad model setting must not take the server down
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            log.error("cannot load model %r: %s", model, e)
            self.show(f"draftls: cannot load model {model!r}: {e}. Completions are off until the "
                      "`draftls.model` setting names a model that loads.", types.MessageType.Error)
            self._progress_end(token, "failed")
            return
        if key != self.load_key():  # the settings changed while loading; a new load is coming
            return
        self.engine, self.loaded_key, self.state = engine, key, "ready"
        # Where it really runs (cuda may have fallen back to the CPU).
        self.device = getattr(engine.backend, "runs_on", engine.backend.device.type)
        ms = (time.perf_counter() - t0) * 1000
        log.info("model %s ready on %s (%s, %.0f ms)", engine.loaded.spec.name, self.device, engine.loaded.source, ms)
        self._progress_end(token, f"{model} ready")

    async def _progress_begin(self, title: str) -> str | None:
        if not _capability(self.client_capabilities, "window", "work_done_progress"):
            return None
        token = f"draftls-load-{uuid.uuid4().hex[:8]}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), timeout=5)
            self.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=False))
        except Exception as e:
            log.info("no progress reporting: %r", e)
            return None
        return token

    def _progress_report(self, token: str | None, message: str) -> None:
        self._progress(token, self.work_done_progress.report, types.WorkDoneProgressReport(message=message))

    def _progress_end(self, token: str | None, message: str) -> None:
        self._progress(token, self.work_done_progress.end, types.WorkDoneProgressEnd(message=message))

    def _progress(self, token: str | None, send: Callable[[str, Any], None], value: Any) -> None:
        """Send one progress notification; a client that fails it costs a log line, never the load."""
        if token is None:
            return
        try:
            send(token, value)
        except Exception:
            log.exception("progress notification failed")

    # -- completion -------------------------------------------------------------

    def document_text(self, uri: str) -> str | None:
        """The text of an open document, or None (unknown documents are not read from disk)."""
        doc = self.workspace.text_documents.get(uri)
        return None if doc is None else doc.source

    async def complete(self, uri: str, position: types.Position) -> tuple[str, int, CompletionResult] | None:
        """Run the engine for a cursor; None when there is nothing to do (no model, no document, stale)."""
        engine = self.engine
        if engine is None or self.state != "ready":
            return None
        text = self.document_text(uri)
        if text is None:
            log.info("completion for a document that is not open: %s", uri)
            return None
        offset = to_offset(text, position.line, position.character, self.encoding())
        path = _fs_path(uri)
        root = self.workspace.root_path
        req = CompletionRequest(text, offset, path, root, self.settings)
        # A newer request for the same document makes the running one stale.
        flag = threading.Event()
        if (old := self.pending.get(uri)) is not None:
            old.set()
        self.pending[uri] = flag

        def run() -> CompletionResult | None:
            if flag.is_set():  # superseded while queued
                return None
            try:
                result = engine.complete(req, flag.is_set)
            finally:
                collector.after_request()
                self.last_done = time.monotonic()
            if flag.is_set() and not result.timings.get("cancelled"):
                self.stats.stale_decoded += 1  # stale before it ended, yet it ran to its end
            return result

        job = asyncio.get_running_loop().run_in_executor(self.worker, run)
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:  # $/cancelRequest or shutdown: stop decoding within a token
            flag.set()
            job.add_done_callback(self._record_cancelled)
            raise
        finally:
            if self.pending.get(uri) is flag:
                del self.pending[uri]
        if result is None or flag.is_set():
            self._record_cancelled(job)
            return None
        self.stats.requests += 1
        self.stats.last = result.timings
        self.stats.latency_ms.append(result.timings["total_ms"])
        if result.drafts:
            self.stats.answered += 1
        return text, offset, result

    def tidy_when_idle(self) -> None:
        """Every `IDLE_S`, while no completion runs or waits and none ended in the last
        `IDLE_S`: a full garbage collection if one is due (`lsp.collector`), on the worker."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        loop.call_later(IDLE_S, self.tidy_when_idle)
        if self.tidying or self.pending or time.monotonic() - self.last_done < IDLE_S or not collector.active():
            return
        self.tidying = True

        def run() -> None:
            try:
                collector.idle()
            finally:
                self.tidying = False

        try:
            self.worker.submit(run)
        except RuntimeError:  # the worker is shut down: the server is exiting
            self.tidying = False

    def _record_cancelled(self, job: asyncio.Future[CompletionResult | None]) -> None:
        self.stats.cancelled += 1
        if not job.cancelled() and job.exception() is None and (r := job.result()) is not None:
            self.stats.last_cancelled = r.timings

    def _workspace_ready(self) -> bool:
        try:
            self.workspace
        except RuntimeError:
            return False
        return True

    def encoding(self) -> Encoding:
        try:
            return encoding_of(self.workspace.position_encoding)
        except RuntimeError:  # not initialized yet
            return "utf-16"

    def drafts_for(self, text: str, offset: int, result: CompletionResult) -> tuple[types.Range, list[str]]:
        """The range to replace (the typed part of the word) and each draft's full insert text."""
        start = word_start(text, offset)
        typed = text[start:offset]
        enc = self.encoding()
        rng = types.Range(_pos(text, start, enc), _pos(text, offset, enc))
        inserts = []
        for d in result.drafts:
            if d.text.strip() and typed + d.text not in inserts and len(inserts) < self.settings.drafts:
                inserts.append(typed + d.text)
        self.stats.shown += len(inserts)
        return rng, inserts

    def document_view(self, uri: str) -> dict[str, Any] | None:
        """The server's copy of an open document: version, length (UTF-16 units) and SHA-256 of its text."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return None
        data = doc.source.encode("utf-16-le", "surrogatepass")
        return {"version": doc.version, "length": len(data) // 2,
                "sha256": hashlib.sha256(doc.source.encode("utf-8", "surrogatepass")).hexdigest()}

    def status(self) -> dict[str, Any]:
        """What `draftls.status` returns."""
        lat = sorted(self.stats.latency_ms)
        engine = self.engine
        return {
            "state": "loading" if self.state == "idle" else self.state,  # idle: before `initialized`
            "error": self.error,
            "model": engine.loaded.spec.name if engine else self.settings.model,
            "backend": engine.backend.name if engine else self.settings.backend,
            # What the backend's weights are (`quantize: auto` resolved); torch runs float32.
            "quantize": engine.loaded.quantize if engine else self.settings.load_quantize,
            "device": self.device or self.settings.device,
            "positionEncoding": self.encoding(),
            "settings": self.settings.to_wire(),
            "requests": self.stats.requests,
            "answered": self.stats.answered,
            "cancelled": self.stats.cancelled,
            "staleDecoded": self.stats.stale_decoded,
            "openDocuments": len(self.workspace.text_documents) if self._workspace_ready() else 0,
            "errors": self.stats.errors,
            "shown": self.stats.shown,
            "accepted": self.stats.accepted,
            "acceptance": self.stats.accepted / self.stats.answered if self.stats.answered else None,
            "latency_ms": {
                "p50": statistics.median(lat) if lat else None,
                "p90": lat[min(len(lat) - 1, int(0.9 * len(lat)))] if lat else None,
            },
            "last": self.stats.last,
            "analysis": self.analysis.stats.as_dict(),
            "gc": {"full": collector.stats.full, "ms": round(collector.stats.ms, 1),
                   "frozen": collector.stats.frozen, "policy": collector.active()},
            "sizes": engine.sizes(self.settings) if engine else None,  # [current, limit] of each cache
            "lastCancelled": self.stats.last_cancelled,
        }


def _capability(caps: Any, *path: str) -> bool:
    for name in path:
        caps = getattr(caps, name, None)
        if caps is None:
            return False
    return bool(caps)


def _pos(text: str, offset: int, enc: Encoding) -> types.Position:
    line, character = to_position(text, offset, enc)
    return types.Position(line=line, character=character)


def _fs_path(uri: str) -> str | None:
    from pygls.uris import to_fs_path

    try:
        return to_fs_path(uri)
    except Exception:
        return None


def guarded(default: Callable[[], T]) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Log any exception of an async handler and answer `default()` instead; cancellation passes."""
    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def handler(ls: DraftServer, *args: Any) -> T:
            try:
                return await fn(ls, *args)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                ls.stats.errors += 1
                log.exception("%s failed", fn.__name__)
                ls.log_to_client(f"draftls: {fn.__name__} failed: {type(e).__name__}: {e}", types.MessageType.Error)
                return default()
        return handler
    return wrap


class ClientLogHandler(logging.Handler):
    """Forwards draftls log records to the client as window/logMessage."""

    LEVELS = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
              logging.INFO: types.MessageType.Info}

    def __init__(self, server: DraftServer):
        super().__init__(logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        kind = self.LEVELS.get(record.levelno, types.MessageType.Log)
        if record.levelno >= logging.ERROR:
            kind = types.MessageType.Error
        try:
            self.server.log_to_client(f"draftls: {record.getMessage()}", kind)
        except Exception:
            pass


def create_server(base: Settings | None = None) -> DraftServer:
    """A server with every handler registered; `base` comes from the command line."""
    server = DraftServer(base)

    @server.feature(types.INITIALIZE)
    def initialize(ls: DraftServer, params: types.InitializeParams) -> None:
        try:
            ls.loop = asyncio.get_running_loop()
        except RuntimeError:
            ls.loop = None
        ls.protocol._workspace = LspWorkspace.like(ls.workspace)
        ls.apply_settings(params.initialization_options, "initializationOptions")
        if isinstance(params.process_id, int) and params.process_id > 0:
            watch_client(params.process_id)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: DraftServer, params: types.InitializedParams) -> None:
        try:
            ls.loop = asyncio.get_running_loop()
            await ls.pull_configuration()
        finally:
            ls.start_loading()
            if ls.loop is not None:
                ls.loop.call_later(IDLE_S, ls.tidy_when_idle)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    @guarded(lambda: None)
    async def did_change_configuration(ls: DraftServer, params: types.DidChangeConfigurationParams) -> None:
        settings = params.settings
        if isinstance(settings, dict) and isinstance(settings.get(SECTION), dict):
            ls.apply_settings(settings[SECTION], "didChangeConfiguration")
        else:  # the "pull" style: the notification only says that something changed
            await ls.pull_configuration()

    @server.feature(
        types.TEXT_DOCUMENT_INLINE_COMPLETION,
        types.InlineCompletionOptions(),
    )
    @guarded(lambda: types.InlineCompletionList(items=[]))
    async def inline_completion(ls: DraftServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        done = await ls.complete(params.text_document.uri, params.position)
        if done is None:
            return types.InlineCompletionList(items=[])
        text, offset, result = done
        rng, inserts = ls.drafts_for(text, offset, result)
        return types.InlineCompletionList(items=[
            types.InlineCompletionItem(insert_text=t, range=rng, command=_accepted(params.text_document.uri, i, t))
            for i, t in enumerate(inserts)
        ])

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=[".", "(", ","], resolve_provider=False),
    )
    @guarded(lambda: types.CompletionList(is_incomplete=True, items=[]))
    async def completion(ls: DraftServer, params: types.CompletionParams) -> types.CompletionList:
        done = await ls.complete(params.text_document.uri, params.position)
        if done is None:
            return types.CompletionList(is_incomplete=True, items=[])
        text, offset, result = done
        rng, inserts = ls.drafts_for(text, offset, result)
        items = []
        for i, t in enumerate(inserts):
            first, _, rest = t.partition("\n")
            items.append(types.CompletionItem(
                label=(first.strip() or t.strip())[:80] + (" …" if rest else ""),
                kind=types.CompletionItemKind.Snippet,
                detail=f"draftls draft {i + 1}",
                documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```python\n{t}\n```"),
                sort_text=f"{i:04d}",
                filter_text=t,
                preselect=i == 0,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=rng, new_text=t),
                command=_accepted(params.text_document.uri, i, t),
            ))
        # Incomplete: the drafts depend on every character, so the client must ask again.
        return types.CompletionList(is_incomplete=True, items=items)

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @guarded(lambda: None)
    async def did_open(ls: DraftServer, params: types.DidOpenTextDocumentParams) -> None:
        # jedi's first look at a file takes about a second: take it now, not in the first request.
        if ls.settings.monitors and params.text_document.language_id == "python":
            ls.analysis.warm(params.text_document.text, _fs_path(params.text_document.uri), ls.workspace.root_path)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    @guarded(lambda: None)
    async def did_save(ls: DraftServer, params: types.DidSaveTextDocumentParams) -> None:
        # jedi reads the other modules from disk, and keeps what it inferred from them for a while.
        ls.analysis.invalidate()

    @server.command(STATUS_COMMAND)
    def status(ls: DraftServer, *args: Any) -> dict[str, Any]:
        # `{"uri": ...}` as argument adds the server's view of that document (tests compare it).
        uri = args[0].get("uri") if args and isinstance(args[0], dict) else None
        return ls.status() | ({"document": ls.document_view(uri)} if isinstance(uri, str) else {})

    @server.command(ACCEPTED_COMMAND)
    def accepted(ls: DraftServer, *args: Any) -> None:
        ls.stats.accepted += 1
        log.debug("accepted %s", args)

    @server.feature(types.EXIT)
    def exit_(ls: DraftServer, *args: Any) -> None:
        ls.exit_code = 0 if ls.protocol._shutdown else 1  # LSP: `exit` without `shutdown` is an error

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: DraftServer, *args: Any) -> None:
        for flag in ls.pending.values():
            flag.set()
        ls.worker.shutdown(wait=False, cancel_futures=True)

    return server


def watch_client(pid: int, every_s: float = 2.0) -> threading.Thread | None:
    """Exit when the client process is gone (LSP `processId`): an editor that crashed never
    closes our stdin, and an orphaned server would hold its memory forever. A pid that is
    not there from the start belongs to another PID namespace (a client outside our
    container): it is not watched."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        log.info("the client's process %d is not visible from here; not watching it", pid)
        return None
    except PermissionError:
        pass

    def run() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                log.warning("the client (pid %d) is gone; exiting", pid)
                logging.shutdown()
                os._exit(0)
            except PermissionError:  # alive, run by another user
                pass

    thread = threading.Thread(target=run, name="draftls-client-watch", daemon=True)
    thread.start()
    return thread


def _accepted(uri: str, index: int, text: str) -> types.Command:
    return types.Command(title="draftls: accepted", command=ACCEPTED_COMMAND,
                         arguments=[{"uri": uri, "draft": index, "chars": len(text)}])


def serve(base: Settings, tcp: int | None = None, host: str = "127.0.0.1") -> None:
    """Run the server over stdio (or TCP, for debugging) until the client exits."""
    import sys

    server = create_server(base)
    collector.install()  # full garbage collections when idle, not in a completion
    handler = ClientLogHandler(server)
    for name in ("draftls", "decoding", "models", "monitors", "lsp"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    for h in logging.getLogger().handlers:  # stderr: warnings and worse unless -v; the client gets INFO
        if h.level == logging.NOTSET and logging.getLogger().level > logging.INFO:
            h.setLevel(logging.getLogger().level)
    if tcp is not None:
        server.start_tcp(host, tcp)
        return
    # stdout carries the protocol: anything else printed there (a library's print, a
    # progress bar) would corrupt it, so Python-level writes go to stderr instead.
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    server.start_io(sys.stdin.buffer, out)
    # The client closed our stdin (or sent `exit`). Worker threads may still be decoding or
    # waiting on a hung jedi query; they must not keep the process alive.
    log.info("the client closed the connection; exiting")
    logging.shutdown()
    os._exit(server.exit_code)
