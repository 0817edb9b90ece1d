"""HealingMonitor on the real SmolLM2 vocabulary: masks against brute force, steps, undo."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from monitors.base import Monitor
from monitors.healing import HealingMonitor
from monitors.vocab import VocabIndex

Pieces = list[tuple[int, bytes]]

HEALS = [b"ap", b"    ", b"\n        ", b"netl", "é".encode(), "😀".encode()[:1], b"self.ap",
         b"\t", b"\x04"]


def ids(mask: torch.Tensor) -> set[int]:
    return set(mask.nonzero().flatten().tolist())


def expected(pieces: Pieces, rest: bytes) -> set[int]:
    """Brute force: tokens that stay on `rest` or pass beyond it."""
    return {i for i, b in pieces if rest.startswith(b) or b.startswith(rest)}


def first_id(pieces: Pieces, data: bytes) -> int:
    return next(i for i, b in pieces if b == data)


@pytest.mark.parametrize("heal", HEALS)
def test_first_mask_matches_brute_force(smol_index: VocabIndex, smol_pieces: Pieces,
                                        heal: bytes) -> None:
    monitor = HealingMonitor(smol_index, heal)
    mask = monitor.allowed()
    assert mask is not None and not monitor.done
    assert mask.dtype == torch.bool and mask.shape == (smol_index.vocab_size,)
    assert ids(mask) == expected(smol_pieces, heal)
    assert not mask[smol_index.special].any()


def test_mask_holds_the_obvious_tokens(hf_tokenizer: Tokenizer, smol_index: VocabIndex) -> None:
    mask = HealingMonitor(smol_index, b"ap").allowed()
    assert mask is not None
    for piece in ["a", "ap", "append", "apply"]:
        assert mask[hf_tokenizer.token_to_id(piece)], piece
    for piece in ["Ġap", "p", "b", "<|endoftext|>"]:
        assert not mask[hf_tokenizer.token_to_id(piece)], piece


def test_empty_heal_is_done_from_the_start(smol_index: VocabIndex) -> None:
    monitor = HealingMonitor(smol_index, b"")
    assert monitor.done and monitor.allowed() is None
    monitor.accept(100)
    monitor.rollback(1)
    assert monitor.done and monitor.allowed() is None


def test_steps_then_rollback_restore_masks(smol_index: VocabIndex, smol_pieces: Pieces) -> None:
    heal = b"\n        "
    monitor = HealingMonitor(smol_index, heal)
    initial = monitor.allowed()

    monitor.accept(first_id(smol_pieces, b"\n"))
    after_newline = monitor.allowed()
    assert after_newline is not None and monitor.consumed == 1
    assert ids(after_newline) == expected(smol_pieces, b"        ")

    monitor.accept(first_id(smol_pieces, b"    "))
    after_four = monitor.allowed()
    assert after_four is not None and monitor.consumed == 5
    assert ids(after_four) == expected(smol_pieces, b"    ")

    # A token that covers the rest and goes on (the first token of the real code).
    beyond = next(i for i, b in smol_pieces if b.startswith(b"    ") and len(b) > 4)
    monitor.accept(beyond)
    assert monitor.done and monitor.allowed() is None

    # More tokens after done are still counted, so rollback stays exact across done.
    monitor.accept(100)
    monitor.accept(101)
    monitor.rollback(3)
    assert not monitor.done
    assert torch.equal(monitor.allowed(), after_four)
    monitor.rollback(1)
    assert torch.equal(monitor.allowed(), after_newline)
    monitor.rollback(1)
    assert torch.equal(monitor.allowed(), initial) and monitor.consumed == 0


def test_exact_completion_is_done(smol_index: VocabIndex, smol_pieces: Pieces) -> None:
    monitor = HealingMonitor(smol_index, b"    ")
    monitor.accept(first_id(smol_pieces, b"    "))
    assert monitor.done and monitor.allowed() is None
    assert monitor.consumed == 4


def test_fork_is_independent(smol_index: VocabIndex, smol_pieces: Pieces) -> None:
    monitor = HealingMonitor(smol_index, b"    ")
    monitor.accept(first_id(smol_pieces, b" "))
    fork = monitor.fork()
    assert isinstance(fork, HealingMonitor) and fork.consumed == 1
    fork.accept(first_id(smol_pieces, b"  "))
    monitor.accept(first_id(smol_pieces, b" "))
    assert ids(fork.allowed()) == expected(smol_pieces, b" ")
    assert ids(monitor.allowed()) == expected(smol_pieces, b"  ")
    fork.rollback(2)  # reaches back before the fork, on the copy only
    assert fork.consumed == 0 and monitor.consumed == 2


def test_token_off_the_heal_text_fails_until_rolled_back(hf_tokenizer: Tokenizer,
                                                         smol_index: VocabIndex) -> None:
    monitor = HealingMonitor(smol_index, b"ap")
    initial = monitor.allowed()
    for bad in ["x", "<|endoftext|>"]:
        monitor.accept(hf_tokenizer.token_to_id(bad))
        assert monitor.failed and not monitor.done
        mask = monitor.allowed()
        assert mask is not None and mask.shape == initial.shape and not mask.any()
        monitor.accept(hf_tokenizer.token_to_id("ap"))  # nothing repairs it
        assert monitor.failed
        monitor.rollback(2)
        assert torch.equal(monitor.allowed(), initial)


def test_rollback_bounds(smol_index: VocabIndex) -> None:
    monitor = HealingMonitor(smol_index, b"ap")
    monitor.rollback(0)
    with pytest.raises(ValueError):
        monitor.rollback(1)
    with pytest.raises(ValueError):
        monitor.rollback(-1)


def test_masks_are_shared_per_remaining_text(smol_index: VocabIndex,
                                             smol_pieces: Pieces) -> None:
    monitor = HealingMonitor(smol_index, b"xap")
    monitor.accept(first_id(smol_pieces, b"x"))
    assert monitor.allowed() is HealingMonitor(smol_index, b"ap").allowed()


def test_is_a_monitor(smol_index: VocabIndex) -> None:
    assert isinstance(HealingMonitor(smol_index, b"ap"), Monitor)


HEAL_TEXTS = st.one_of(
    st.text(min_size=1, max_size=6).map(str.encode),
    st.sampled_from(["    ", "\n    ", "\t\t", "obj.ap", "self.", "é", "😀", "  # n"]).map(str.encode),
).flatmap(lambda b: st.integers(1, min(len(b), 8)).map(lambda k: b[:k]))  # cuts mid-character too


@pytest.fixture(scope="module")
def pieces_by_first_byte(smol_pieces: Pieces) -> dict[int, Pieces]:
    """Brute-force candidates grouped by first byte: a match must share it with the rest."""
    groups: dict[int, Pieces] = {}
    for i, b in smol_pieces:
        groups.setdefault(b[0], []).append((i, b))
    return groups


@settings(max_examples=30, deadline=None)
@given(heal=HEAL_TEXTS, data=st.data())
def test_random_walk_matches_brute_force(smol_index: VocabIndex,
                                         pieces_by_first_byte: dict[int, Pieces],
                                         heal: bytes, data: st.DataObject) -> None:
    monitor = HealingMonitor(smol_index, heal)
    masks = []
    out = b""
    while not monitor.done:
        mask = monitor.allowed()
        assert mask is not None
        allowed = ids(mask)
        rest = heal[len(out):]
        assert allowed == expected(pieces_by_first_byte.get(rest[0], []), rest)
        if not allowed:  # a byte SmolLM2 cannot spell: the caller must stop this draft
            return
        masks.append(mask)
        choices = sorted(allowed)
        token = choices[data.draw(st.integers(0, len(choices) - 1))]
        monitor.accept(token)
        out += smol_index.token_bytes(token)
        assert monitor.consumed == len(out)
    assert out.startswith(heal) and monitor.allowed() is None
    # Undo one token at a time: each earlier mask comes back exactly.
    for mask in reversed(masks):
        monitor.rollback(1)
        assert torch.equal(monitor.allowed(), mask)
    assert monitor.consumed == 0
