"""VocabIndex on-disk cache: round trip, keys, corrupt files and unwritable places."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from monitors import vocab
from monitors.vocab import VocabIndex, cache_key, default_cache_dir


def same_index(a: VocabIndex, b: VocabIndex) -> None:
    assert a.vocab_size == b.vocab_size
    assert [a.token_bytes(i) for i in range(a.vocab_size)] == \
           [b.token_bytes(i) for i in range(b.vocab_size)]
    assert torch.equal(a.special, b.special)
    assert a._sorted_ids == b._sorted_ids and a._keys == b._keys
    assert a._by_bytes == b._by_bytes and a._max_len == b._max_len


@pytest.fixture(scope="module")
def reference(hf_tokenizer: Tokenizer) -> VocabIndex:
    return VocabIndex(hf_tokenizer, cache_dir=False)


@pytest.fixture(scope="module")
def good_file(hf_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """The name and contents of a freshly written cache file."""
    path = VocabIndex(hf_tokenizer, cache_dir=tmp_path_factory.mktemp("vocab")).cache_path
    assert path is not None
    return path.name, path.read_bytes()


def test_round_trip_gives_identical_bytes(hf_tokenizer: Tokenizer, reference: VocabIndex,
                                          good_file: tuple[str, bytes], tmp_path: Path) -> None:
    assert reference.cache_path is None and not reference.from_cache
    built = VocabIndex(hf_tokenizer, cache_dir=tmp_path)
    assert not built.from_cache
    assert built.cache_path.read_bytes() == good_file[1]  # deterministic
    assert built.cache_path is not None and built.cache_path.parent == tmp_path
    assert built.cache_path.name == cache_key(hf_tokenizer.to_str(), 49152) + ".vocab"
    assert [p.name for p in tmp_path.iterdir()] == [built.cache_path.name]  # no temp files left
    loaded = VocabIndex(hf_tokenizer, cache_dir=str(tmp_path))
    assert loaded.from_cache and loaded.cache_path == built.cache_path
    same_index(loaded, reference)
    same_index(built, reference)
    assert torch.equal(loaded.name_mask([b"join"], b""), reference.name_mask([b"join"], b""))


def test_key_depends_on_json_and_vocab_size(hf_tokenizer: Tokenizer, tmp_path: Path) -> None:
    text = hf_tokenizer.to_str()
    assert cache_key(text, 49152) == cache_key(text, 49152)
    assert cache_key(text, 49152) != cache_key(text, 49152 + 64)
    assert cache_key(text, 49152) != cache_key(text.replace('"Ġjoin"', '"Ġjoim"'), 49152)
    padded = VocabIndex(hf_tokenizer, 49152 + 64, cache_dir=tmp_path)
    again = VocabIndex(hf_tokenizer, 49152 + 64, cache_dir=tmp_path)
    assert again.from_cache and again.token_bytes(49152 + 3) == b""
    assert [p.name for p in tmp_path.iterdir()] == [cache_key(text, 49152 + 64) + ".vocab"]
    assert padded.cache_path == again.cache_path == tmp_path / (cache_key(text, 49152 + 64) + ".vocab")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage", "directory"])
def test_corrupt_cache_files_are_rebuilt(hf_tokenizer: Tokenizer, reference: VocabIndex,
                                         good_file: tuple[str, bytes], tmp_path: Path,
                                         damage: str) -> None:
    name, data = good_file
    path = tmp_path / name
    if damage == "flip":
        path.write_bytes(data[:5000] + bytes([data[5000] ^ 1]) + data[5001:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x00" * len(data))
    else:
        path.mkdir()  # unreadable as a file, and in the way of the rewrite too
    rebuilt = VocabIndex(hf_tokenizer, cache_dir=tmp_path)
    assert rebuilt.cache_path == path and not rebuilt.from_cache
    same_index(rebuilt, reference)
    if damage != "directory":
        assert path.read_bytes() == data  # rewritten whole
        assert VocabIndex(hf_tokenizer, cache_dir=tmp_path).from_cache


def test_unwritable_cache_dir_is_not_fatal(hf_tokenizer: Tokenizer, reference: VocabIndex,
                                           tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    index = VocabIndex(hf_tokenizer, cache_dir=blocker / "vocab")
    assert not index.from_cache
    same_index(index, reference)


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv(vocab.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "draftls" / "vocab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "draftls" / "vocab"
    monkeypatch.setenv(vocab.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    for off in ["0", "off", "false", "no", "none", "OFF"]:
        monkeypatch.setenv(vocab.CACHE_ENV, off)
        assert default_cache_dir() is None


def test_env_switch_turns_the_cache_off(hf_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(vocab.CACHE_ENV, "0")
    index = VocabIndex(hf_tokenizer)
    assert index.cache_path is None and not index.from_cache
    assert list(tmp_path.iterdir()) == []
    monkeypatch.delenv(vocab.CACHE_ENV)
    index = VocabIndex(hf_tokenizer)
    assert index.cache_path is not None and index.cache_path.parent == tmp_path / "draftls" / "vocab"
    assert index.cache_path.exists()
