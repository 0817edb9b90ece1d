"""Open documents as the client sees them: LSP line breaks and clamped positions.

pygls splits lines with `str.splitlines`, which also breaks at form feeds, U+2028 and other
characters that LSP clients treat as text; after one of them an incremental edit lands on
the wrong line and the server's copy drifts from the editor's. pygls also drops an edit
whose range starts past the last line. Here a change's range is turned into string offsets
with the same rules as every other position (lsp.positions: only \\n, \\r\\n and \\r end a
line; past the end of a line or the document clamps).
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from lsp.positions import encoding_of, to_offset


class LspDocument(TextDocument):
    """A TextDocument whose incremental changes follow LSP's line rules."""

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        src = self.source
        enc = encoding_of(self.position_codec.encoding)
        start = to_offset(src, change.range.start.line, change.range.start.character, enc)
        end = to_offset(src, change.range.end.line, change.range.end.character, enc)
        start, end = min(start, end), max(start, end)  # a reversed range still names the same text
        self._source = src[:start] + change.text + src[end:]


class LspWorkspace(Workspace):
    """pygls' Workspace, holding LspDocuments."""

    @classmethod
    def like(cls, ws: Workspace) -> LspWorkspace:
        """A fresh workspace with the settings of pygls' own (made at `initialize`, still empty)."""
        return cls(ws.root_uri, ws._sync_kind, list(ws.folders.values()), ws.position_encoding)

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> Any:
        return LspDocument(doc_uri, source=source, version=version, language_id=language_id,
                           sync_kind=self._sync_kind, position_codec=self._position_codec)
