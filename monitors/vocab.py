"""The vocabulary index: the real bytes of every token, prefix queries and cached masks."""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

# Masks kept per index by default. A mask is V bytes (48 KiB for SmolLM2's 49152 tokens),
# so 256 masks cost at most about 12 MiB.
DEFAULT_CACHE_SIZE = 256
NAME_SETS = 64  # name sets kept sorted (`_sorted_names`): a request meets a few
RESTS = 1 << 15  # name rests whose tokens are kept (`_rest_tokens`)

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


# ---- identifiers -------------------------------------------------------------------

# Bytes that cannot continue a Python identifier: ASCII outside [A-Za-z0-9_], as closed
# ranges in byte order. Bytes >= 0x80 can belong to a non-ASCII identifier character, so
# they never break a name.
_BREAK_RANGES = ((0x00, 0x2F), (0x3A, 0x40), (0x5B, 0x5E), (0x60, 0x60), (0x7B, 0x7F))
# The same as bisect bounds: a token is `rest + b + ...` with b in a range exactly when it
# sorts in [rest + lower, rest + upper).
_BREAK_BOUNDS = tuple((bytes([lo]), bytes([hi + 1])) for lo, hi in _BREAK_RANGES)
BREAK_BYTES: frozenset[int] = frozenset(b for lo, hi in _BREAK_RANGES for b in range(lo, hi + 1))


def _as_bytes(name: str | bytes | bytearray | memoryview) -> bytes:
    return name.encode("utf-8") if isinstance(name, str) else bytes(name)


# ---- on-disk cache -------------------------------------------------------------------

# The environment variable that moves the on-disk cache (a directory) or turns it off
# ("0", "off", "false", "no" or "none").
CACHE_ENV = "DRAFTLS_VOCAB_CACHE"
_FORMAT_VERSION = 1
_MAGIC = b"DLSVOCAB"
# magic, format version, vocab size, number of non-empty tokens, length of the bytes blob.
# Then: u32 length per id, u8 special flag per id, u32 ids in byte order, the blob (every
# id's bytes in id order), and the SHA-256 of everything before it.
_HEADER = struct.Struct("<8sIIII")
_DIGEST = 32


def _code_digest() -> bytes:
    # The cached bytes come from this module's decoding rules: any edit of it starts a
    # fresh cache, so that a fix of token_decoder never meets stale files.
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).digest()
    except OSError:
        return b""


_CODE_DIGEST = _code_digest()


def default_cache_dir() -> Path | None:
    """Where VocabIndex caches token bytes: `$XDG_CACHE_HOME/draftls/vocab`.

    `$DRAFTLS_VOCAB_CACHE` overrides it with another directory, or turns the cache off
    with "0", "off", "false", "no" or "none". Returns None when the cache is off.
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in ("0", "off", "false", "no", "none"):
        return None
    if env:
        return Path(env)
    base = cache_base()
    return base / "vocab" if base is not None else None


def cache_base() -> Path | None:
    """`$XDG_CACHE_HOME/draftls` (default `~/.cache/draftls`): the only place the server writes."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory
            return None
    return Path(base) / "draftls"


def cache_key(tokenizer_json: str, vocab_size: int) -> str:
    """The cache file's name stem for a tokenizer (its JSON) at a model vocabulary size."""
    h = hashlib.sha256(f"draftls-vocab/{_FORMAT_VERSION}/{vocab_size}/".encode())
    h.update(_CODE_DIGEST)
    h.update(tokenizer_json.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:40]


_Table = tuple[list[bytes], np.ndarray, list[int]]  # bytes per id, special flags [V], ids in byte order


def _dump_table(path: Path, pieces: list[bytes], special: np.ndarray, sorted_ids: list[int]) -> None:
    """Write the table to `path` atomically (a temporary file, then os.replace)."""
    blob = b"".join(pieces)
    body = b"".join([
        _HEADER.pack(_MAGIC, _FORMAT_VERSION, len(pieces), len(sorted_ids), len(blob)),
        np.fromiter(map(len, pieces), dtype="<u4", count=len(pieces)).tobytes(),
        np.asarray(special, dtype=np.uint8).tobytes(),
        np.asarray(sorted_ids, dtype="<u4").tobytes(),
        blob,
    ])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.write(hashlib.sha256(body).digest())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _load_table(path: Path, size: int) -> _Table:
    """Read a table written by _dump_table; raises ValueError or OSError when unusable."""
    data = path.read_bytes()
    if len(data) < _HEADER.size + _DIGEST:
        raise ValueError("truncated")
    body = memoryview(data)[:-_DIGEST]
    if hashlib.sha256(body).digest() != data[-_DIGEST:]:
        raise ValueError("checksum mismatch")
    magic, version, n, n_sorted, n_blob = _HEADER.unpack_from(body)
    if magic != _MAGIC or version != _FORMAT_VERSION or n != size:
        raise ValueError("another format or vocabulary size")
    at = _HEADER.size
    if len(body) != at + 5 * n + 4 * n_sorted + n_blob:
        raise ValueError("wrong length")
    lengths = np.frombuffer(body, dtype="<u4", count=n, offset=at)
    at += 4 * n
    special_np = np.frombuffer(body, dtype=np.uint8, count=n, offset=at)
    at += n
    sorted_np = np.frombuffer(body, dtype="<u4", count=n_sorted, offset=at)
    at += 4 * n_sorted
    if (int(lengths.sum()) != n_blob or (n_sorted and int(sorted_np.max()) >= n)
            or int(np.count_nonzero(lengths)) != n_sorted or not lengths[sorted_np].all()):
        raise ValueError("inconsistent table")
    blob = data[at:at + n_blob]
    offsets = list(accumulate(lengths.tolist(), initial=0))
    pieces = [blob[a:b] for a, b in zip(offsets, offsets[1:])]
    return pieces, special_np != 0, sorted_np.tolist()


def _decode_table(tokenizer: Tokenizer, tokenizer_json: str, size: int) -> _Table:
    """Decode every token's bytes from the tokenizer itself (the slow path)."""
    decode = token_decoder(json.loads(tokenizer_json))
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
    # Ids sorted by their bytes, for range queries.
    sorted_ids = sorted((i for i in range(size) if pieces[i]), key=pieces.__getitem__)
    return pieces, np.array(special, dtype=bool), sorted_ids


# ---- the index -----------------------------------------------------------------------


class VocabIndex:
    """The bytes of every token of one tokenizer, with prefix queries and cached masks.

    Ids from the tokenizer's size up to the model's `vocab_size` map to b"". Special
    tokens map to b"" and are flagged in `special`. Queries only return tokens with
    non-empty bytes, so neither kind is ever allowed by them.

    Masks are bool tensors [vocab_size] and may come from a shared LRU cache of
    `cache_size` entries: callers must never change them in place.

    The decoded bytes are cached on disk in `cache_dir` (True: `default_cache_dir()`;
    None or False: no disk cache), one file per tokenizer JSON and vocabulary size. An
    unreadable or corrupt file is rebuilt; a cache that cannot be written is skipped.
    """

    def __init__(self, tokenizer: Tokenizer, vocab_size: int | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE,
                 cache_dir: Path | str | bool | None = True) -> None:
        t0 = time.perf_counter()
        size = tokenizer.get_vocab_size(with_added_tokens=True) if vocab_size is None else vocab_size
        self.vocab_size: int = size
        tokenizer_json = tokenizer.to_str()
        if cache_dir is True:
            directory = default_cache_dir()
        elif cache_dir is None or cache_dir is False or cache_dir == "":
            directory = None
        else:
            directory = Path(cache_dir)
        # The disk cache file (None when off), and whether this index came from it.
        self.cache_path: Path | None = (
            directory / f"{cache_key(tokenizer_json, size)}.vocab" if directory is not None else None)
        self.from_cache: bool = False
        table: _Table | None = None
        if self.cache_path is not None:
            try:
                table = _load_table(self.cache_path, size)
                self.from_cache = True
            except FileNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001 - a bad cache file is never fatal
                log.warning("vocabulary cache %s is unusable (%s); rebuilding it", self.cache_path, e)
        if table is None:
            table = _decode_table(tokenizer, tokenizer_json, size)
            if self.cache_path is not None:
                try:
                    _dump_table(self.cache_path, *table)
                except Exception as e:  # noqa: BLE001 - nor is a cache that cannot be written
                    log.warning("cannot write the vocabulary cache %s: %s", self.cache_path, e)
        pieces, special, sorted_ids = table
        self._pieces: list[bytes] = pieces
        self.special: torch.Tensor = torch.from_numpy(special)  # [V], do not mutate

        # Ids sorted by their bytes for range queries, and bytes -> ids for exact lookups
        # (ids can share bytes, e.g. "<0x41>" and "A").
        self._sorted_ids: list[int] = sorted_ids
        self._keys: list[bytes] = [pieces[i] for i in sorted_ids]
        self._sorted_ids_np = np.asarray(sorted_ids, dtype=np.int64)
        self._sorted_ids_t = torch.from_numpy(self._sorted_ids_np)
        self._by_bytes: dict[bytes, list[int]] = {k: [i] for k, i in zip(self._keys, sorted_ids)}
        if len(self._by_bytes) != len(self._keys):  # shared bytes: lists of several ids
            self._by_bytes = {}
            for i, piece in zip(sorted_ids, self._keys):
                self._by_bytes.setdefault(piece, []).append(i)
        self._max_len = max(map(len, self._keys), default=0)
        # Slices of the byte order holding the tokens that start with a break byte.
        self._break_start: list[tuple[int, int]] = []
        for lower, upper in _BREAK_BOUNDS:
            a = bisect.bisect_left(self._keys, lower)
            b = bisect.bisect_left(self._keys, upper, a)
            if a < b:
                self._break_start.append((a, b))
        self._fixed: dict[str, torch.Tensor] = {}  # masks that never leave the cache

        self._cache_size = cache_size
        self._cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the server may decode on several threads
        self._names_sorted: OrderedDict[frozenset[str | bytes], tuple[list[bytes], frozenset[bytes]]] = OrderedDict()
        self._rests: dict[bytes, tuple[tuple[int, ...], tuple[tuple[int, int], ...]]] = {}
        self.build_seconds: float = time.perf_counter() - t0

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

    def excluding_mask(self, ids: Iterable[int]) -> torch.Tensor:
        """Return the bool mask [V] of every token but `ids` (cached; do not mutate)."""
        key = frozenset(ids)
        return self._cached(("not", key), lambda: ~self._build(torch.tensor(sorted(key), dtype=torch.long)))

    def forced_mask(self, text: bytes) -> torch.Tensor:
        """Return the mask of tokens that stay on `text`: a prefix of it, or it and more.

        That is `prefixes_of(text) ∪ starting_with(text)`, cached per text; do not mutate.
        """
        return self._cached(("forced", text), lambda: self._build_forced(text))

    # ---- names (monitor-guided decoding) -------------------------------------------

    def name_prefix_ids(self, names: Iterable[str | bytes], typed: bytes = b"") -> list[int]:
        """Return the ids (sorted) of tokens t with `typed + t` a prefix of a name, or equal to one.

        Names are str (UTF-8 encoded) or bytes. Only non-empty, non-special tokens count.
        """
        rests, _ = self._name_rests(names, bytes(typed))
        return sorted(set(self._prefix_ids(rests)))

    def name_completion_ids(self, names: Iterable[str | bytes], typed: bytes = b"") -> list[int]:
        """Return the ids (sorted) of tokens t with `typed + t` = name + break byte + anything.

        A break byte cannot continue an identifier (ASCII, not [A-Za-z0-9_]): the token
        finishes the name and goes on with `(`, `.`, a space, a newline... If `typed`
        itself already holds a name and a break byte, every non-empty token qualifies.
        """
        rests, beyond = self._name_rests(names, bytes(typed))
        return sorted({i for a, b in self._completion_slices(rests, beyond)
                       for i in self._sorted_ids[a:b]})

    def name_mask(self, names: Iterable[str | bytes], typed: bytes = b"") -> torch.Tensor:
        """Return the mask [V] of `name_prefix_ids ∪ name_completion_ids` (cached; do not mutate).

        Cached per (frozenset(names), typed): pass the same frozenset at every step to
        make a hit cost next to nothing.
        """
        key = ("names", frozenset(names), bytes(typed))
        return self._cached(key, lambda: self._build_names(key[1], key[2]))

    def name_next_mask(self, names: Iterable[str | bytes], typed: bytes = b"") -> torch.Tensor:
        """Return the mask [V] of each name's natural next token after `typed`: the longest
        token on its path, and the tokens that finish it and break (cached; do not mutate).

        A subset of `name_mask`: where the model would write `cache`, not `c` or `ca`."""
        key = ("next", frozenset(names), bytes(typed))
        return self._cached(key, lambda: self._build_next(key[1], key[2]))

    def ident_continuation_mask(self) -> torch.Tensor:
        """Return the mask [V] of tokens whose first byte can continue an identifier.

        That is [A-Za-z0-9_] or any byte >= 0x80; do not mutate.
        """
        mask = self._fixed.get("ident")
        if mask is None:
            sel = np.ones(len(self._keys), dtype=bool)
            for a, b in self._break_start:
                sel[a:b] = False
            mask = self._fixed.setdefault("ident", self._sorted_mask(sel))
        return mask

    def break_start_mask(self) -> torch.Tensor:
        """Return the mask [V] of non-empty, non-special tokens whose first byte is a break byte.

        The complement of `ident_continuation_mask` over those tokens; do not mutate.
        """
        mask = self._fixed.get("break")
        if mask is None:
            sel = np.zeros(len(self._keys), dtype=bool)
            for a, b in self._break_start:
                sel[a:b] = True
            mask = self._fixed.setdefault("break", self._sorted_mask(sel))
        return mask

    def starts_a_name(self, names: Iterable[str | bytes], typed: bytes) -> bool:
        """Whether one of `names` starts with `typed` (a bisection of the sorted set)."""
        ordered, _ = self._sorted_names(names)
        k = bisect.bisect_left(ordered, typed)
        return k < len(ordered) and ordered[k].startswith(typed)

    def _name_rests(self, names: Iterable[str | bytes], typed: bytes) -> tuple[set[bytes], bool]:
        """Return what remains of each name that starts with `typed`, and whether `typed`
        already goes past a name with a break byte."""
        ordered, members = self._sorted_names(names)
        n = len(typed)
        lo = bisect.bisect_left(ordered, typed)
        upper = _successor(typed)
        hi = len(ordered) if upper is None else bisect.bisect_left(ordered, upper, lo)
        rests = {name[n:] for name in ordered[lo:hi]}
        beyond = any(typed[k] in BREAK_BYTES and typed[:k] in members for k in range(n))
        return rests, beyond

    def _sorted_names(self, names: Iterable[str | bytes]) -> tuple[list[bytes], frozenset[bytes]]:
        """`names` as bytes, sorted (for the range that starts with what is typed) and as a set.

        A monitor passes the same frozenset at every step of a name: sorted once, the names
        that go on from `typed` are a bisection away instead of a pass over all of them."""
        key = names if isinstance(names, frozenset) else frozenset(names)
        with self._lock:
            found = self._names_sorted.get(key)
            if found is not None:
                self._names_sorted.move_to_end(key)
                return found
        members = frozenset(_as_bytes(n) for n in key)
        found = (sorted(members), members)
        with self._lock:
            self._names_sorted[key] = found
            while len(self._names_sorted) > NAME_SETS:
                self._names_sorted.popitem(last=False)
        return found

    def _prefix_ids(self, rests: Iterable[bytes]) -> list[int]:
        """Ids of the non-empty tokens that are a prefix of one of `rests` (may repeat)."""
        ids: list[int] = []
        for rest in rests:
            ids.extend(self._rest_tokens(rest)[0])
        return ids

    def _completion_slices(self, rests: Iterable[bytes], beyond: bool) -> list[tuple[int, int]]:
        """Slices of the byte order holding the tokens `rest + break byte + anything`."""
        if beyond:
            return [(0, len(self._keys))]
        out: list[tuple[int, int]] = []
        for rest in rests:
            # An empty rest: `typed` is a whole name, so a break must come next.
            out.extend(self._rest_tokens(rest)[1] if rest else self._break_start)
        return out

    def _rest_tokens(self, rest: bytes) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
        """For what remains of a name: the ids of the tokens that are a prefix of it, and the
        slices of the byte order holding `rest + break byte + anything` (for a non-empty rest).

        Kept per rest: the first mask after each dot covers every name of the object (about
        1 ms for os's 454), and the same names come back on other objects (dunders, the
        methods of a base class) and in later requests."""
        found = self._rests.get(rest)
        if found is not None:
            return found
        get, keys = self._by_bytes.get, self._keys
        ids: list[int] = []
        for k in range(1, min(len(rest), self._max_len) + 1):
            if (hit := get(rest[:k])) is not None:
                ids.extend(hit)
        slices: list[tuple[int, int]] = []
        if rest:
            lo, hi = self._range(rest)
            if (hit := get(rest)) is not None:
                lo += len(hit)  # `rest` itself sorts first; only longer tokens can go on
            for lower, upper in _BREAK_BOUNDS:
                if lo >= hi:
                    break
                a = bisect.bisect_left(keys, rest + lower, lo, hi)
                lo = bisect.bisect_left(keys, rest + upper, a, hi)
                if lo > a:
                    slices.append((a, lo))
        found = (tuple(ids), tuple(slices))
        if len(self._rests) >= RESTS:
            self._rests.clear()  # rarely: a long session's worth of names
        self._rests[rest] = found
        return found

    def _completion_mask(self, rests: set[bytes], beyond: bool) -> torch.Tensor:
        """The mask [V] of the tokens `rest + break byte + anything` (see _completion_slices)."""
        sel = np.zeros(len(self._keys), dtype=bool)
        for a, b in self._completion_slices(rests, beyond):
            sel[a:b] = True
        return self._sorted_mask(sel)

    def _build_names(self, names: frozenset[str | bytes], typed: bytes) -> torch.Tensor:
        rests, beyond = self._name_rests(names, typed)
        mask = self._completion_mask(rests, beyond)
        prefix = self._prefix_ids(rests)
        if prefix:
            mask[prefix] = True
        return mask

    def _build_next(self, names: frozenset[str | bytes], typed: bytes) -> torch.Tensor:
        rests, beyond = self._name_rests(names, typed)
        mask = self._completion_mask(rests, beyond)
        for rest in rests:
            if ahead := self.prefixes_of(rest):  # shortest first
                longest = len(self._pieces[ahead[-1]])
                mask[[i for i in ahead if len(self._pieces[i]) == longest]] = True
        return mask

    def _sorted_mask(self, sel: np.ndarray) -> torch.Tensor:
        """Return the mask [V] of the tokens selected in byte order."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[self._sorted_ids_np[sel]] = True
        return torch.from_numpy(mask)

    # ---- internals -------------------------------------------------------------------

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


T = TypeVar("T")
_derived: weakref.WeakKeyDictionary[VocabIndex, dict[Callable[[VocabIndex], Any], Any]] = weakref.WeakKeyDictionary()
_derived_lock = threading.RLock()  # a table may be built from another derived table


def derived(index: VocabIndex, build: Callable[[VocabIndex], T]) -> T:
    """`build(index)`, computed once per index and builder (monitors' token tables)."""
    with _derived_lock:
        tables = _derived.setdefault(index, {})
        if build not in tables:
            tables[build] = build(index)
        return tables[build]
