"""N-gram tables: counts, longest-context prediction, document boundaries and the disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from decoding.ngram import NgramTable, stdlib_sources, stdlib_table


def test_prediction_uses_the_longest_context_seen_often_enough() -> None:
    # After "1 2" comes 3 twice and 4 once; after "9 1 2" it is always 4.
    ids = np.array([1, 2, 3, 7, 1, 2, 3, 7, 9, 1, 2, 4, 9, 1, 2, 4])
    t = NgramTable.build(ids, 16)
    assert t.predict([5, 1, 2]) == (3, 2 / 4)  # "5 1 2" unseen: the bigram context "1 2"
    assert t.predict([9, 1, 2]) == (4, 1.0)  # the trigram context wins
    assert t.predict([9, 1, 2], min_count=3) is None  # nothing seen three times
    assert t.predict([15]) is None  # never seen


def test_no_ngram_spans_two_documents() -> None:
    t = NgramTable.build(np.array([1, 2, -1, 3, 1, 2, -1, 3]), 8)
    assert t.predict([2], min_count=1) is None  # "2" is only ever followed by a document end


def test_save_load_round_trip(tmp_path: Path) -> None:
    t = NgramTable.build(np.arange(50) % 7, 8)
    t.save(tmp_path / "t.npz")
    back = NgramTable.load(tmp_path / "t.npz")
    for n, o in t.orders.items():
        assert np.array_equal(o.ctx, back.orders[n].ctx) and np.array_equal(o.cnt, back.orders[n].cnt)
    assert back.predict([3, 4], min_count=1) == t.predict([3, 4], min_count=1) == (5, 1.0)


def test_stdlib_table_is_cached_and_a_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    calls = []

    def encode(texts: list[str]) -> list[list[int]]:
        calls.append(len(texts))
        return [[len(line) % 30 for line in text.splitlines()] for text in texts]

    first = stdlib_table(encode, 32, "toy", tmp_path)
    files = list((tmp_path / "ngram").iterdir())
    assert len(calls) == 1 and len(files) == 1
    second = stdlib_table(encode, 32, "toy", tmp_path)
    assert len(calls) == 1  # read from the cache
    assert second.predict([4, 4], min_count=1) == first.predict([4, 4], min_count=1)
    files[0].write_bytes(b"not a zip file")
    stdlib_table(encode, 32, "toy", tmp_path)
    assert len(calls) == 2  # detected and rebuilt
    data = bytearray(files[0].read_bytes())  # one byte flipped inside an array: the archive's CRC-32 sees it
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    stdlib_table(encode, 32, "toy", tmp_path)
    assert len(calls) == 3


def test_stdlib_sources_leave_out_tests() -> None:
    files = stdlib_sources()
    assert any(p.name == "json" or p.parent.name == "json" for p in files)
    assert not any("test" in p.parts or "idle_test" in p.parts for p in files)
