"""A small synchronous JSON-RPC client for the real server over stdio, for fuzzing and load tests.

pytest-lsp's client types every message, so it cannot send malformed ones, and it is async,
which hypothesis does not drive. This one writes raw frames, reads every message the server
sends in a thread, and answers the server's own requests (configuration, progress tokens).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class ServerGone(Exception):
    """The server closed its output (exited or crashed)."""


class StdioServer:
    """`python -m lsp.cli serve ARGS` over pipes; `request` waits for the answer with a timeout."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lsp.cli", "serve", *args], cwd=cwd or ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._answers: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.unmatched: list[dict[str, Any]] = []  # responses nobody waited for (null ids: parse errors)
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    # -- wire ---------------------------------------------------------------------

    def send_raw(self, body: bytes) -> None:
        frame = b"Content-Length: %d\r\n\r\n" % len(body) + body
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(frame)
            self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8"))

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while (line := out.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if line == b"" or length is None:
                break
            msg = json.loads(out.read(length))
            self._dispatch(msg)
        for q in list(self._answers.values()):
            q.put({"gone": True})

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-200]

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "method" in msg and "id" in msg:  # a request from the server
            result: Any = None
            if msg["method"] == "workspace/configuration":
                result = [None for _ in msg["params"]["items"]]
            self.send({"id": msg["id"], "result": result})
        elif "method" in msg:
            self.notifications.append(msg)
            del self.notifications[:-1000]
        else:
            q = self._answers.get(msg.get("id"))
            if q is None:
                self.unmatched.append(msg)
            else:
                q.put(msg)

    # -- requests -------------------------------------------------------------------

    def start(self, method: str, params: Any, msg_id: Any = None) -> Any:
        """Send a request and return its id; `wait` collects the answer."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        self._answers[msg_id] = queue.Queue()
        self.send({"id": msg_id, "method": method, "params": params})
        return msg_id

    def wait(self, msg_id: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The whole response message ({"result": ...} or {"error": ...}); raises on a hang or exit."""
        try:
            msg = self._answers[msg_id].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to request {msg_id!r} in {timeout} s") from None
        del self._answers[msg_id]
        if msg.get("gone"):
            raise ServerGone(b"".join(self.stderr[-20:]).decode("utf-8", "replace"))
        return msg

    def request(self, method: str, params: Any, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(self.start(method, params), timeout)

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def cancel(self, msg_id: Any) -> None:
        self.notify("$/cancelRequest", {"id": msg_id})

    # -- session ----------------------------------------------------------------------

    def initialize(self, options: dict[str, Any] | None = None, root: Path | None = None,
                   process_id: int | None = None) -> dict[str, Any]:
        caps = {"general": {"positionEncodings": ["utf-16"]},
                "workspace": {"configuration": True},
                "window": {"workDoneProgress": True},
                "textDocument": {"inlineCompletion": {}, "synchronization": {}}}
        answer = self.request("initialize", {
            "processId": process_id if process_id is not None else os.getpid(),
            "rootUri": root.as_uri() if root else None, "capabilities": caps,
            "initializationOptions": options or {}})
        self.notify("initialized", {})
        return answer

    def status(self, uri: str | None = None) -> dict[str, Any]:
        args = [{"uri": uri}] if uri else []
        answer = self.request("workspace/executeCommand", {"command": "draftls.status", "arguments": args})
        return answer["result"]

    def wait_ready(self, timeout: float = 300.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (s := self.status())["state"] not in ("ready", "failed"):
            if time.monotonic() > end:
                raise TimeoutError(f"model still {s['state']} after {timeout} s")
            time.sleep(0.05)
        return s

    def close(self, timeout: float = 30.0) -> int:
        """shutdown + exit; the exit code (the process is killed if it hangs)."""
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=timeout)
                self.notify("exit", None)
            return self.proc.wait(timeout)
        except (ServerGone, OSError, TimeoutError, subprocess.TimeoutExpired):
            self.proc.kill()
            return self.proc.wait()

    def rss_kb(self) -> tuple[int, int]:
        """(current, peak) resident memory of the server process, in KiB (Linux /proc)."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
