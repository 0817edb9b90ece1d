"""Tokenizer adapter over the `tokenizers` library (fast, no transformers import)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

# Tokens that end a completion in the families we know, when present in the vocabulary.
END_TOKENS = (
    "<|endoftext|>", "<|im_end|>", "<file_sep>", "<|file_separator|>", "<|fim_pad|>",
    "<EOT>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<｜end▁of▁sentence｜>", "<|EOT|>",
)


class Tokenizer:
    """Encode/decode without special tokens, plus the ids that matter for prompting."""

    def __init__(self, hf: HFTokenizer, eos_ids: set[int] | None = None):
        self.hf = hf
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        plain = hf.encode("a", add_special_tokens=False).ids
        full = hf.encode("a", add_special_tokens=True).ids
        # What the post-processor puts before the text (a BOS for Llama-2 style models).
        self.prefix_ids: list[int] = full[: len(full) - len(plain)] if full[-len(plain) :] == plain else []
        ends = {i for t in END_TOKENS if (i := hf.token_to_id(t)) is not None}
        self.eos_ids: set[int] = ends | set(eos_ids or ())
        # The token that separates documents in pretraining, used to mark a file's start.
        starts = [hf.token_to_id(t) for t in ("<|endoftext|>", "<s>", "<bos>", "<|begin_of_text|>")]
        self.doc_start_id: int | None = next((i for i in starts if i is not None), min(self.eos_ids, default=None))

    @classmethod
    def from_dir(cls, path: Path, eos_ids: set[int] | None = None) -> "Tokenizer":
        """Load `tokenizer.json` (and the EOS named in `tokenizer_config.json`) from a directory."""
        hf = HFTokenizer.from_file(str(path / "tokenizer.json"))
        eos = set(eos_ids or ())
        cfg_path = path / "tokenizer_config.json"
        if cfg_path.exists():
            tok = json.loads(cfg_path.read_text()).get("eos_token")
            tok = tok.get("content") if isinstance(tok, dict) else tok
            if isinstance(tok, str) and (i := hf.token_to_id(tok)) is not None:
                eos.add(i)
        return cls(hf, eos)

    def encode(self, text: str) -> list[int]:
        """Token ids of text, no special tokens."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and their (start, end) character offsets in text."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def decode(self, ids: list[int]) -> str:
        """Text of ids, special tokens skipped."""
        return self.hf.decode(ids, skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (special tokens included), or None."""
        return self.hf.token_to_id(token)
