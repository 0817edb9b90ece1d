"""VocabIndex: token bytes against the tokenizer itself, and queries against brute force."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from monitors.vocab import VocabIndex

ROOT = Path(__file__).resolve().parents[3]

# Code-ish fragments mixed into random unicode text, so that examples hit the merges
# real source code uses (indentation runs, CRLF, tabs) as well as emoji and accents.
FRAGMENTS = ["def ", "self.", "    ", "        ", "\t", "\t\t", "\r\n", "\n", "\n\n    ",
             "😀", "👍🏽", "é", "中文", "ß", "return x", "  # note", "\u00a0", "→", "\x00",
             "obj.ap", "()", "{}", "'''", "\\n", "=="]
TEXTS = st.lists(st.one_of(st.text(max_size=10), st.sampled_from(FRAGMENTS)),
                 max_size=12).map("".join)


def ids(mask: torch.Tensor) -> set[int]:
    return set(mask.nonzero().flatten().tolist())


# ---- SmolLM2: byte-level BPE ------------------------------------------------------


def test_every_token_decodes_like_the_tokenizer(hf_tokenizer: Tokenizer,
                                                smol_index: VocabIndex) -> None:
    # The library's own decoder is the oracle; it turns invalid UTF-8 into U+FFFD the
    # same way Python's "replace" does, so fragments are compared through that too.
    special = smol_index.special.tolist()
    normal = [i for i in range(hf_tokenizer.get_vocab_size()) if not special[i]]
    decoded = hf_tokenizer.decode_batch([[i] for i in normal], skip_special_tokens=False)
    wrong = [(i, smol_index.token_bytes(i), text) for i, text in zip(normal, decoded)
             if smol_index.token_bytes(i).decode("utf-8", "replace") != text]
    assert wrong == []


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_bytes_round_trip(hf_tokenizer: Tokenizer, smol_index: VocabIndex, text: str) -> None:
    token_ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
    # SmolLM2 has no token for a few bytes and drops them silently (see below): only
    # text the tokenizer itself can give back is expected to round-trip.
    assume(hf_tokenizer.decode(token_ids) == text)
    assert smol_index.text_bytes(token_ids) == text.encode()


def test_bytes_round_trip_on_source_code(hf_tokenizer: Tokenizer,
                                         smol_index: VocabIndex) -> None:
    sources = [p.read_text() for p in sorted((ROOT / "monitors").glob("*.py"))]
    sources.append("class A:\r\n\tdef f(self):\r\n\t\treturn '😀'  # é\r\n")
    for text in sources:
        token_ids = hf_tokenizer.encode(text, add_special_tokens=False).ids
        assert smol_index.text_bytes(token_ids) == text.encode()


def test_fragment_tokens_map_to_raw_bytes(hf_tokenizer: Tokenizer,
                                          smol_index: VocabIndex) -> None:
    # GPT-2's map: ð=0xF0, Ł=0x9F, ĺ=0x98, Ģ=0x80, Ġ=space.
    assert smol_index.token_bytes(hf_tokenizer.token_to_id("ĠðŁĺ")) == b" \xf0\x9f\x98"
    assert smol_index.token_bytes(hf_tokenizer.token_to_id("Ģ")) == b"\x80"
    fragments = 0
    for i in range(smol_index.vocab_size):
        try:
            smol_index.token_bytes(i).decode()
        except UnicodeDecodeError:
            fragments += 1
    assert fragments > 100
    # One token per byte, all distinct, except the 21 bytes SmolLM2's vocabulary lacks.
    single = [smol_index.token_bytes(i) for i in range(smol_index.vocab_size)
              if len(smol_index.token_bytes(i)) == 1]
    assert len(single) == len(set(single))
    assert set(single) == {bytes([b]) for b in range(256) if b not in SMOL_MISSING_BYTES}


# Bytes with no single-byte token in SmolLM2 (never seen in training: C0 controls, bytes
# invalid in UTF-8, and the lead bytes of planes 4-11). The tokenizer has no unknown
# token, so it drops them without a trace: text holding them cannot round-trip.
SMOL_MISSING_BYTES = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2,
                      *range(0xF5, 0x100)}


def test_missing_bytes_are_dropped_by_the_tokenizer(hf_tokenizer: Tokenizer) -> None:
    for b in SMOL_MISSING_BYTES:
        if b < 0x80:
            assert hf_tokenizer.encode(chr(b), add_special_tokens=False).ids == []
    assert hf_tokenizer.decode(hf_tokenizer.encode("a\U00040000b").ids) == "a\ufffd\ufffd\ufffdb"


@pytest.mark.parametrize(("piece", "expected"), [
    ("Ġself", b" self"), ("Ċ", b"\n"), ("ĉ", b"\t"), ("čĊ", b"\r\n"), ("ĠĠĠ", b"   "),
    ("ĊĠĠĠĠĠĠĠ", b"\n       "), ("append", b"append"),
])
def test_whitespace_and_plain_tokens(hf_tokenizer: Tokenizer, smol_index: VocabIndex,
                                     piece: str, expected: bytes) -> None:
    assert smol_index.token_bytes(hf_tokenizer.token_to_id(piece)) == expected


def test_special_tokens_are_flagged_and_never_returned(hf_tokenizer: Tokenizer,
                                                       smol_index: VocabIndex) -> None:
    eos = hf_tokenizer.token_to_id("<|endoftext|>")
    assert sorted(ids(smol_index.special)) == list(range(17))
    assert smol_index.token_bytes(eos) == b""
    for i in range(17):
        assert smol_index.token_bytes(i) == b""
    everything = set(smol_index.starting_with(b""))
    assert everything.isdisjoint(range(17))
    assert eos not in smol_index.prefixes_of(b"<|endoftext|>")
    assert smol_index.prefixes_of(b"<|endoftext|>")  # "<" and friends still are


def test_ids_past_the_tokenizer_are_empty(hf_tokenizer: Tokenizer) -> None:
    index = VocabIndex(hf_tokenizer, 49152 + 64)
    assert index.special.shape == (49152 + 64,)
    assert index.token_bytes(49152 + 10) == b""
    assert not index.special[49152:].any()
    assert max(index.starting_with(b"")) < 49152
    assert index.forced_mask(b"a").shape == (49152 + 64,)
    assert not index.forced_mask(b"a")[49152:].any()


def test_non_special_added_tokens_decode_like_the_tokenizer(hf_tokenizer: Tokenizer) -> None:
    tok = Tokenizer.from_str(hf_tokenizer.to_str())
    tok.add_tokens([AddedToken("    ", normalized=False), AddedToken("ĠFoo", normalized=False),
                    AddedToken("<x é>", normalized=False)])
    index = VocabIndex(tok)
    for text in ["    ", "ĠFoo", "<x é>"]:
        i = tok.token_to_id(text)
        assert i >= 49152 and not index.special[i]
        assert index.token_bytes(i) == tok.decode([i]).encode()
    assert index.token_bytes(tok.token_to_id("ĠFoo")) == b" Foo"


def test_byte_level_without_decoder_and_ff_bytes() -> None:
    # No decoder: the scheme comes from the ByteLevel pre-tokenizer. "ÿ" is byte 0xFF,
    # the edge of the sorted range bound (b"a" ranges up to b"b", past b"a\xff...").
    vocab = {"a": 0, "b": 1, "ÿ": 2, "Ġ": 3, "aÿ": 4, "aÿb": 5, "ab": 6, "Ġa": 7}
    merges = [("a", "ÿ"), ("aÿ", "b"), ("a", "b"), ("Ġ", "a")]
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    index = VocabIndex(tok)
    assert [index.token_bytes(i) for i in range(8)] == [
        b"a", b"b", b"\xff", b" ", b"a\xff", b"a\xffb", b"ab", b" a"]
    assert sorted(index.starting_with(b"a")) == [0, 4, 5, 6]
    assert sorted(index.starting_with(b"a\xff")) == [4, 5]
    assert sorted(index.starting_with(b"\xff")) == [2]
    assert sorted(index.prefixes_of(b"a\xffbc")) == [0, 4, 5]


QUERIES = [b"ap", b"    ", b"\n    ", b"self.", b"a", b" ", "é".encode(), "é".encode()[:1],
           "😀".encode()[:1], "😀".encode()[:3], b"\xff", b"\xff\xff", b"zzzzzzzzzzzz",
           b"def __init__(self):", b""]


@pytest.mark.parametrize("data", QUERIES)
def test_queries_match_brute_force(smol_index: VocabIndex, smol_pieces: list[tuple[int, bytes]],
                                   data: bytes) -> None:
    prefixes = smol_index.prefixes_of(data)
    starting = smol_index.starting_with(data)
    assert len(prefixes) == len(set(prefixes)) and len(starting) == len(set(starting))
    assert set(prefixes) == {i for i, b in smol_pieces if data.startswith(b)}
    assert set(starting) == {i for i, b in smol_pieces if b.startswith(data)}
    assert ids(smol_index.forced_mask(data)) == set(prefixes) | set(starting)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_queries_match_brute_force_on_token_slices(smol_index: VocabIndex,
                                                   smol_pieces: list[tuple[int, bytes]],
                                                   data: st.DataObject) -> None:
    # Slices of real tokens plus a random tail land on populated parts of the sort order.
    _, piece = data.draw(st.sampled_from(smol_pieces))
    cut = data.draw(st.integers(0, len(piece)))
    query = piece[:cut] + data.draw(st.binary(max_size=3))
    assert set(smol_index.prefixes_of(query)) == {i for i, b in smol_pieces if query.startswith(b)}
    assert set(smol_index.starting_with(query)) == {i for i, b in smol_pieces if b.startswith(query)}


def test_consistent_with_names(smol_index: VocabIndex,
                               smol_pieces: list[tuple[int, bytes]]) -> None:
    names = [b"append", b"apply", b"__init__"]
    expected = {i for i, b in smol_pieces if any(n.startswith(b) for n in names)}
    assert set(smol_index.consistent_with(names)) == expected
    assert smol_index.consistent_with([]) == []


def test_mask_is_exact_and_cached(smol_index: VocabIndex) -> None:
    mask = smol_index.mask([5, 100, 7])
    assert mask.dtype == torch.bool and mask.shape == (smol_index.vocab_size,)
    assert ids(mask) == {5, 7, 100}
    assert smol_index.mask((100, 7, 5, 5)) is mask
    assert not smol_index.mask([]).any()
    assert smol_index.forced_mask(b"ap") is smol_index.forced_mask(b"ap")


def test_mask_cache_is_bounded(hf_tokenizer: Tokenizer) -> None:
    index = VocabIndex(hf_tokenizer, cache_size=2)
    first = index.mask([1])
    index.mask([2])
    assert index.mask([1]) is first  # a hit refreshes [1]
    index.mask([3])  # evicts [2], the least recently used
    assert index.mask([1]) is first
    second = index.mask([2])
    assert ids(second) == {2}
    index.mask([3])
    index.mask([4])
    assert index.mask([2]) is not second


# ---- SentencePiece: Metaspace and byte fallback, built here ---------------------

SP_PIECES = ["▁", "▁▁", "▁▁▁▁", "▁def", "▁self", "self", ".", "▁return", "(", ")", ":",
             "a", "b", "c", "d", "e", "f", "l", "n", "r", "s", "t", "u", "x", "_", "▁x", "de"]


def sentencepiece_tokenizer(style: str) -> Tokenizer:
    """A tiny Unigram tokenizer with byte fallback, in one of two SentencePiece layouts."""
    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)]
    vocab += [(f"<0x{b:02X}>", -100.0) for b in range(256)]
    vocab += [(p, -10.0 + len(p)) for p in SP_PIECES]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    if style == "metaspace":
        # Newer layout: Metaspace both ways; the decoder has no ByteFallback step, so the
        # model's byte_fallback flag alone must make <0x..> raw bytes.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        # Llama layout: spaces replaced by a normalizer, undone by Replace in the decoder.
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


_SP = {style: sentencepiece_tokenizer(style) for style in ("metaspace", "llama")}
_SP_INDEX = {style: VocabIndex(tok) for style, tok in _SP.items()}
SP_TEXTS = st.text(alphabet=st.sampled_from(list("abcdefxyz _.():\n\t\r") + ["é", "😀", "中"]),
                   max_size=30)


@pytest.mark.parametrize("style", ["metaspace", "llama"])
def test_sentencepiece_token_bytes(style: str) -> None:
    tok, index = _SP[style], _SP_INDEX[style]
    assert index.token_bytes(tok.token_to_id("<0x0A>")) == b"\n"
    assert index.token_bytes(tok.token_to_id("<0xF0>")) == b"\xf0"
    assert index.token_bytes(tok.token_to_id("▁self")) == b" self"
    assert index.token_bytes(tok.token_to_id("▁▁")) == b"  "
    assert index.token_bytes(tok.token_to_id("de")) == b"de"
    assert ids(index.special) == {0, 1, 2}
    assert index.token_bytes(tok.token_to_id("<s>")) == b""
    # "A" has no piece, only its byte token.
    assert index.prefixes_of(b"A") == [tok.token_to_id("<0x41>")]


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xfe", b"\x00", b" ", b"  ", b"d", b"de"])
def test_sentencepiece_queries_match_brute_force(data: bytes) -> None:
    # Unlike SmolLM2, this vocabulary has every byte, 0xFF included: the range bound's edge.
    index = _SP_INDEX["llama"]
    pieces = [(i, index.token_bytes(i)) for i in range(index.vocab_size)
              if index.token_bytes(i)]
    assert set(index.prefixes_of(data)) == {i for i, b in pieces if data.startswith(b)}
    assert set(index.starting_with(data)) == {i for i, b in pieces if b.startswith(data)}


@pytest.mark.parametrize("style", ["metaspace", "llama"])
@settings(max_examples=60, deadline=None)
@given(text=SP_TEXTS)
def test_sentencepiece_round_trip(style: str, text: str) -> None:
    tok = _SP[style]
    encoding = tok.encode(text, add_special_tokens=False)
    assert 0 not in encoding.ids  # byte fallback, never <unk>
    # Both layouts add a leading "▁" to the text; Metaspace "first" only if none is there.
    if style == "llama":
        expected = " " + text if text else ""
    else:
        expected = text if not text or text.startswith(" ") else " " + text
    assert _SP_INDEX[style].text_bytes(encoding.ids) == expected.encode()

