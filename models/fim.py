"""Fill-in-the-middle prompt templates for the usual code-model families."""

from __future__ import annotations

from dataclasses import dataclass

from models.tokenizer import Tokenizer


@dataclass(frozen=True)
class FimTemplate:
    """Prefix-suffix-middle (PSM) layout: <pre> prefix <suf> suffix <mid> -> middle."""

    name: str
    prefix: str
    suffix: str
    middle: str
    stops: tuple[str, ...] = ()
    # CodeLlama's format puts a space before the prefix text (`<PRE> {prefix} <SUF>...`).
    prefix_lead: str = ""

    def marker_ids(self, tok: Tokenizer) -> tuple[int, int, int]:
        """Ids of the three markers; KeyError if the tokenizer lacks one."""
        ids = tuple(tok.token_to_id(t) for t in (self.prefix, self.suffix, self.middle))
        if None in ids:
            raise KeyError(f"tokenizer lacks the {self.name} FIM tokens")
        return ids  # type: ignore[return-value]

    def build(self, tok: Tokenizer, prefix_ids: list[int], suffix_ids: list[int]) -> list[int]:
        """Token ids of the whole FIM prompt (BOS included when the tokenizer uses one)."""
        pre, suf, mid = self.marker_ids(tok)
        return [*tok.prefix_ids, pre, *prefix_ids, suf, *suffix_ids, mid]

    def stop_ids(self, tok: Tokenizer) -> set[int]:
        """Ids that end the middle part."""
        return {i for t in self.stops if (i := tok.token_to_id(t)) is not None}


TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        FimTemplate("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", ("<|endoftext|>", "<file_sep>")),
        FimTemplate("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>", ("<|endoftext|>",)),
        FimTemplate("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", ("▁<EOT>", "</s>"), prefix_lead=" "),
        FimTemplate(
            "deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", ("<|EOT|>", "<｜end▁of▁sentence｜>")
        ),
        FimTemplate(
            "qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
            ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>"),
        ),
        FimTemplate(
            "codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", ("<|file_separator|>", "<eos>")
        ),
    )
}


def detect_fim(tok: Tokenizer) -> FimTemplate | None:
    """The template whose marker tokens the vocabulary has, or None (prefix-only prompting)."""
    # Qwen2.5-Coder and CodeGemma share marker strings; CodeGemma alone has <|file_separator|>.
    order = ["codegemma", "qwen2.5-coder", "starcoder", "santacoder", "deepseek-coder", "codellama"]
    for name in order:
        t = TEMPLATES[name]
        if name == "codegemma" and tok.token_to_id("<|file_separator|>") is None:
            continue
        if name == "codellama" and tok.token_to_id(t.prefix) is None:
            # Some CodeLlama conversions store the markers without the SentencePiece space.
            bare = FimTemplate("codellama", "<PRE>", "<SUF>", "<MID>", ("<EOT>", "</s>"), prefix_lead=" ")
            if all(tok.token_to_id(m) is not None for m in (bare.prefix, bare.suffix, bare.middle)):
                return bare
            continue
        try:
            t.marker_ids(tok)
        except KeyError:
            continue
        return t
    return None
