"""VocabIndex name queries (monitor-guided decoding) against brute force on SmolLM2."""

from __future__ import annotations

import builtins
import os.path
import time

import pytest
import torch
from tokenizers import Tokenizer

from monitors.vocab import BREAK_BYTES, VocabIndex

# Defined here independently of the index: a break byte is ASCII that cannot continue
# an identifier.
BREAKS = {b for b in range(0x80) if not (chr(b).isalnum() or chr(b) == "_")}

NAME_SETS: dict[str, list[str]] = {
    "os.path": dir(os.path),
    "list": ["append", "extend", "insert"],
    "underscores": ["__init__", "__class__", "__dict__", "_private", "_", "__", "a_b_c", "x1",
                    "_1", "__init_subclass__"],
    "non-ascii": ["größe", "größer", "naïve", "日本語", "x"],
    "nested": ["join", "joinpath", "joined", "j"],
    "builtins": dir(builtins),  # ~160 names, many of them prefixes of others
}
# "grö"[:3] stops inside the two bytes of "ö"; "join(" and "x1." already hold a name and
# a break, so anything may follow.
TYPED = [b"", b"a", b"ex", b"join", b"_", b"__init", b"__init__", "grö".encode(),
         "grö".encode()[:3], b"join(", b"x1.", b"zzz"]


def ids(mask: torch.Tensor) -> set[int]:
    return set(mask.nonzero().flatten().tolist())


@pytest.fixture(scope="module")
def break_table(smol_pieces: list[tuple[int, bytes]]) -> list[tuple[int, bytes, list[int]]]:
    """Every (id, bytes, positions of break bytes in them)."""
    return [(i, b, [k for k, c in enumerate(b) if c in BREAKS]) for i, b in smol_pieces]


def brute_force(table: list[tuple[int, bytes, list[int]]], names: list[str],
                typed: bytes) -> tuple[set[int], set[int]]:
    """(prefix ids, completion ids) straight from the definitions, over every token."""
    encoded = {n.encode() for n in names}
    prefixes = {n[:k] for n in encoded for k in range(len(n) + 1)}
    typed_breaks = [k for k, c in enumerate(typed) if c in BREAKS]
    prefix, completion = set(), set()
    for i, piece, breaks in table:
        text = typed + piece
        if text in prefixes:  # typed + t is a prefix of (or equal to) a name
            prefix.add(i)
        # typed + t = name + break + anything
        if any(text[:k] in encoded for k in typed_breaks + [len(typed) + k for k in breaks]):
            completion.add(i)
    return prefix, completion


def test_break_bytes_are_ascii_non_identifier_bytes() -> None:
    assert BREAK_BYTES == BREAKS
    assert {ord(c) for c in "().,: \n\t[]{}=+-*/%<>!'\"#\\"} <= BREAK_BYTES
    assert not {ord(c) for c in "azAZ09_"} & BREAK_BYTES


@pytest.mark.parametrize("typed", TYPED, ids=repr)
@pytest.mark.parametrize("names", NAME_SETS, ids=str)
def test_name_queries_match_brute_force(smol_index: VocabIndex,
                                        break_table: list[tuple[int, bytes, list[int]]],
                                        names: str, typed: bytes) -> None:
    name_list = NAME_SETS[names]
    prefix, completion = brute_force(break_table, name_list, typed)
    got_prefix = smol_index.name_prefix_ids(name_list, typed)
    got_completion = smol_index.name_completion_ids(name_list, typed)
    assert got_prefix == sorted(prefix)
    assert got_completion == sorted(completion)
    mask = smol_index.name_mask(frozenset(n.encode() for n in name_list), typed)
    assert mask.dtype == torch.bool and mask.shape == (smol_index.vocab_size,)
    assert ids(mask) == prefix | completion


def test_brute_force_cases_are_not_vacuous(smol_index: VocabIndex) -> None:
    # The definitions above are exercised on both sides with real tokens.
    assert smol_index.name_completion_ids(["__init__"], b"__init")  # "__(" and friends
    assert smol_index.name_prefix_ids(dir(os.path), b"")
    assert smol_index.name_prefix_ids(["größe"], "grö".encode()[:3])  # "\xb6" and more
    assert len(smol_index.name_completion_ids(["join"], b"join")) > 1000  # every break-first token


def test_leading_space_tokens_are_not_allowed_after_a_dot(hf_tokenizer: Tokenizer,
                                                          smol_index: VocabIndex) -> None:
    names = frozenset({b"join", b"split", b"exists"})
    mask = smol_index.name_mask(names)
    for piece in ["Ġjoin", "Ġsplit", "Ġexists", "Ġ", "Ċ", "("]:
        assert not mask[hf_tokenizer.token_to_id(piece)], piece
    for piece in ["join", "split", "exists", "j", "ex"]:
        assert mask[hf_tokenizer.token_to_id(piece)], piece
    # After the whole name a break may follow, a space included, but not more name bytes
    # unless another name goes on.
    done = smol_index.name_mask(names, b"join")
    for piece in ["(", ")", ",", ".", "Ġ", "Ċ", "Ġjoin", "():"]:
        if (i := hf_tokenizer.token_to_id(piece)) is not None:
            assert done[i], piece
    assert not done[hf_tokenizer.token_to_id("ed")]
    assert smol_index.name_mask(names | {b"joined"}, b"join")[hf_tokenizer.token_to_id("ed")]


def test_special_and_empty_ids_are_never_allowed(hf_tokenizer: Tokenizer) -> None:
    index = VocabIndex(hf_tokenizer, 49152 + 64, cache_dir=None)
    banned = index.special.clone()
    banned[49152:] = True
    assert banned.sum() == 17 + 64
    everything = ~banned
    for names, typed in [([""], b""), (["join"], b"join("), (["a", "join"], b"join"),
                         (dir(builtins), b""), (["<|endoftext|>"], b"")]:
        mask = index.name_mask(names, typed)
        assert not (mask & banned).any()
    # typed already past a name and a break: anything non-empty may follow.
    assert torch.equal(index.name_mask(["join"], b"join("), everything)
    assert torch.equal(index.ident_continuation_mask() | index.break_start_mask(), everything)


def test_ident_and_break_start_masks(smol_index: VocabIndex,
                                     smol_pieces: list[tuple[int, bytes]]) -> None:
    ident = smol_index.ident_continuation_mask()
    brk = smol_index.break_start_mask()
    assert ids(ident) == {i for i, b in smol_pieces if b[0] not in BREAKS}
    assert ids(brk) == {i for i, b in smol_pieces if b[0] in BREAKS}
    assert not (ident & brk).any()
    assert not (ident | brk)[smol_index.special].any()
    assert smol_index.ident_continuation_mask() is ident
    assert smol_index.break_start_mask() is brk
    # A full name with no longer name: exactly the break-first tokens.
    assert torch.equal(smol_index.name_mask(frozenset({b"append"}), b"append"), brk)


def test_name_masks_are_cached(smol_index: VocabIndex) -> None:
    names = frozenset(n.encode() for n in dir(os.path))
    first = smol_index.name_mask(names, b"is")
    assert smol_index.name_mask(names, b"is") is first
    assert smol_index.name_mask(list(names), b"is") is first  # the key is frozenset(names)
    assert smol_index.name_mask(names, b"i") is not first


def test_name_mask_is_fast_for_300_names(smol_index: VocabIndex) -> None:
    index = smol_index
    names = frozenset(n.encode() for n in dir(os) + dir(builtins))  # used by no other test
    assert len(names) > 300
    start = time.perf_counter()
    index.name_mask(names)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        index.name_mask(names)
    hit = (time.perf_counter() - start) / 100
    # Typically ~1.5 ms and ~1 us; generous bounds for loaded CI machines.
    assert first < 0.05
    assert hit < 0.0005
