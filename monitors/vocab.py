"""The vocabulary index: the real bytes of every token, prefix queries and cached masks."""

from __future__ import annotations

import bisect
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import torch
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

# Masks kept per index by default. A mask is V bytes (48 KiB for SmolLM2's 49152 tokens),
# so 256 masks cost at most about 12 MiB.
DEFAULT_CACHE_SIZE = 256

# SentencePiece byte-fallback tokens: "<0x0A>" stands for the single byte 0x0A.
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_table() -> dict[int, int]:
    """Return a str.translate table from GPT-2 byte-level characters to their bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + shifted
            shifted += 1
    # Characters below 256 that are not byte-level characters (space, controls, U+00AD)
    # go to U+FFFF so that the latin-1 encode fails, as the Rust decoder then keeps the
    # token's UTF-8 text. Characters above 255 that are not in the map fail by themselves.
    table = {c: 0xFFFF for c in range(256)}
    table.update({c: b for b, c in chars.items()})
    return table


_BYTE_LEVEL = _byte_level_table()


def _flatten(component: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return the steps of a decoder or pre-tokenizer config, Sequence flattened."""
    if component is None:
        return []
    if component.get("type") == "Sequence":
        inner = component.get("decoders") or component.get("pretokenizers") or []
        return [step for c in inner for step in _flatten(c)]
    return [component]


def token_decoder(config: dict[str, Any]) -> Callable[[str], bytes]:
    """Build the function from a token string to the bytes it adds mid-sequence.

    `config` is the tokenizer's JSON (`Tokenizer.to_str()`). The scheme comes from the
    decoder, or from the pre-tokenizer when there is no decoder, and byte fallback also
    from the model. Only the in-sequence effect of each step is kept: the first token's
    stripped leading space (Metaspace, Strip after Fuse) is a start-of-text effect.
    """
    decoder = config.get("decoder")
    steps = _flatten(decoder)
    if decoder is None:
        steps = [s for s in _flatten(config.get("pre_tokenizer"))
                 if s.get("type") in ("ByteLevel", "Metaspace")]
    model = config.get("model") or {}
    kinds = {s.get("type") for s in steps}
    byte_level = "ByteLevel" in kinds
    # A model with byte fallback emits <0x..> tokens for text it cannot spell; they
    # stand for raw bytes even if the decoder forgot its ByteFallback step.
    byte_fallback = "ByteFallback" in kinds or bool(model.get("byte_fallback"))

    edits: list[Callable[[str], str]] = []
    fused = False
    for step in steps:
        kind = step.get("type")
        if kind == "Metaspace":
            edits.append(_replacer(step.get("replacement", "▁"), " "))
        elif kind == "Replace":
            pattern = step.get("pattern", {})
            if "String" in pattern:
                edits.append(_replacer(pattern["String"], step.get("content", "")))
            else:
                regex = re.compile(pattern.get("Regex", ""))
                content = step.get("content", "")
                edits.append(lambda s, r=regex, c=content: r.sub(lambda _: c, s))
        elif kind == "BPEDecoder":
            edits.append(_replacer(step.get("suffix", "</w>"), " "))
        elif kind == "Strip":
            # After Fuse the text is one piece, so Strip only touches its two ends.
            if not fused:
                edits.append(_stripper(step.get("content", " "), step.get("start", 0),
                                       step.get("stop", 0)))
        elif kind == "Fuse":
            fused = True
        elif kind not in ("ByteLevel", "ByteFallback"):
            log.warning("decoder step %s is not understood; its tokens map to their UTF-8 text",
                        kind)

    def decode(token: str) -> bytes:
        if byte_fallback and (m := _BYTE_TOKEN.fullmatch(token)):
            return bytes([int(m[1], 16)])
        for edit in edits:
            token = edit(token)
        if byte_level:
            try:
                return token.translate(_BYTE_LEVEL).encode("latin-1")
            except UnicodeEncodeError:
                pass  # not a byte-level string (e.g. an added token with a space): keep UTF-8
        return token.encode("utf-8")

    return decode


def _replacer(old: str, new: str) -> Callable[[str], str]:
    return lambda s: s.replace(old, new)


def _stripper(content: str, start: int, stop: int) -> Callable[[str], str]:
    def strip(s: str) -> str:
        for _ in range(start):
            if not s.startswith(content):
                break
            s = s[len(content):]
        for _ in range(stop):
            if not s.endswith(content):
                break
            s = s[: len(s) - len(content)]
        return s

    return strip


def _successor(data: bytes) -> bytes | None:
    """Return the smallest byte string above every string that starts with `data`."""
    data = data.rstrip(b"\xff")
    if not data:
        return None
    return data[:-1] + bytes([data[-1] + 1])


class VocabIndex:
    """The bytes of every token of one tokenizer, with prefix queries and cached masks.

    Ids from the tokenizer's size up to the model's `vocab_size` map to b"". Special
    tokens map to b"" and are flagged in `special`. Queries only return tokens with
    non-empty bytes, so neither kind is ever allowed by them.

    Masks are bool tensors [vocab_size] and may come from a shared LRU cache of
    `cache_size` entries: callers must never change them in place.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        decode = token_decoder(json.loads(tokenizer.to_str()))
        size = tokenizer.get_vocab_size(with_added_tokens=True) if vocab_size is None else vocab_size
        self.vocab_size: int = size
        added = tokenizer.get_added_tokens_decoder()
        pieces = [b""] * size
        special = [False] * size
        for text, i in tokenizer.get_vocab(with_added_tokens=True).items():
            if i >= size:
                continue  # the model cannot emit it
            token = added.get(i)
            if token is not None and token.special:
                special[i] = True
            else:
                pieces[i] = decode(token.content if token is not None else text)
        self._pieces: list[bytes] = pieces
        self.special: torch.Tensor = torch.tensor(special, dtype=torch.bool)  # [V], do not mutate

        # Ids sorted by their bytes for range queries, and bytes -> ids for exact lookups
        # (ids can share bytes, e.g. "<0x41>" and "A").
        self._sorted_ids: list[int] = sorted((i for i in range(size) if pieces[i]),
                                             key=pieces.__getitem__)
        self._keys: list[bytes] = [pieces[i] for i in self._sorted_ids]
        self._sorted_ids_t = torch.tensor(self._sorted_ids, dtype=torch.long)
        self._by_bytes: dict[bytes, list[int]] = {}
        for i in self._sorted_ids:
            self._by_bytes.setdefault(pieces[i], []).append(i)
        self._max_len = max((len(b) for b in self._keys), default=0)

        self._cache_size = cache_size
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the server may decode on several threads

    def token_bytes(self, token_id: int) -> bytes:
        """Return the bytes `token_id` adds to the text when decoded in sequence."""
        return self._pieces[token_id]

    def text_bytes(self, token_ids: Iterable[int]) -> bytes:
        """Return the bytes of a token sequence."""
        return b"".join(self._pieces[i] for i in token_ids)

    def ids_of(self, data: bytes) -> list[int]:
        """Return the ids whose bytes equal `data` exactly."""
        return list(self._by_bytes.get(data, ()))

    def prefixes_of(self, data: bytes) -> list[int]:
        """Return the ids whose non-empty bytes are a prefix of `data` (or equal it)."""
        ids: list[int] = []
        for k in range(1, min(len(data), self._max_len) + 1):
            ids.extend(self._by_bytes.get(data[:k], ()))
        return ids

    def starting_with(self, data: bytes) -> list[int]:
        """Return the ids whose non-empty bytes start with `data` (or equal it)."""
        lo, hi = self._range(data)
        return self._sorted_ids[lo:hi]

    def consistent_with(self, names: Iterable[bytes]) -> list[int]:
        """Return the ids whose bytes are a non-empty prefix of at least one of `names`."""
        return sorted({i for name in names for i in self.prefixes_of(name)})

    def mask(self, ids: Iterable[int]) -> torch.Tensor:
        """Return the bool mask [V] of exactly `ids` (cached; do not mutate)."""
        key = frozenset(ids)
        return self._cached(key, lambda: self._build(torch.tensor(sorted(key), dtype=torch.long)))

    def forced_mask(self, text: bytes) -> torch.Tensor:
        """Return the mask of tokens that stay on `text`: a prefix of it, or it and more.

        That is `prefixes_of(text) ∪ starting_with(text)`, cached per text; do not mutate.
        """
        return self._cached(("forced", text), lambda: self._build_forced(text))

    def _build_forced(self, text: bytes) -> torch.Tensor:
        lo, hi = self._range(text)
        mask = self._build(self._sorted_ids_t[lo:hi])
        mask[self.prefixes_of(text)] = True
        return mask

    def _range(self, data: bytes) -> tuple[int, int]:
        """Return the slice of the sorted keys that start with `data`."""
        lo = bisect.bisect_left(self._keys, data)
        upper = _successor(data)
        hi = len(self._keys) if upper is None else bisect.bisect_left(self._keys, upper, lo)
        return lo, hi

    def _build(self, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)  # [V]
        mask[ids] = True
        return mask

    def _cached(self, key: Hashable, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            mask = self._cache.get(key)
            if mask is not None:
                self._cache.move_to_end(key)
                return mask
        mask = build()  # outside the lock: a rare double build is harmless
        if self._cache_size > 0:
            with self._lock:
                self._cache[key] = mask
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return mask
