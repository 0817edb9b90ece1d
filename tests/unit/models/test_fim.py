"""FIM template detection and prompt layout, on small in-code tokenizers per model family."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models as tk_models
from tokenizers import pre_tokenizers, processors

from models.fim import TEMPLATES, detect_fim
from models.loading import LoadedModel
from models.tokenizer import Tokenizer

WORDS = ["[UNK]", "def", "f", "(", ")", ":", "return", "x", "+", "1", "y"]

# What each family's vocabulary really holds (markers, end tokens, and a BOS where used).
FAMILY_SPECIALS: dict[str, list[str]] = {
    "starcoder": ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<file_sep>"],
    "santacoder": ["<|endoftext|>", "<fim-prefix>", "<fim-middle>", "<fim-suffix>", "<fim-pad>"],
    "codellama": ["<s>", "</s>", "▁<PRE>", "▁<MID>", "▁<SUF>", "▁<EOT>"],
    "deepseek-coder": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
                       "<｜fim▁end｜>", "<|EOT|>"],
    "qwen2.5-coder": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                      "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"],
    "codegemma": ["<bos>", "<eos>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|file_separator|>"],
}
# Families whose tokenizer puts a BOS before the text.
BOS = {"codellama": "<s>", "deepseek-coder": "<｜begin▁of▁sentence｜>", "codegemma": "<bos>"}


def make_tokenizer(specials: list[str], bos: str | None = None) -> Tokenizer:
    """A word-level tokenizer over WORDS plus `specials`, optionally prepending `bos`."""
    hf = HFTokenizer(tk_models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.add_special_tokens(specials)
    if bos is not None:
        bos_id = hf.token_to_id(bos)
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
        )
    return Tokenizer(hf)


def test_every_template_is_covered() -> None:
    """The family table here covers every template the module ships."""
    assert set(FAMILY_SPECIALS) == set(TEMPLATES)


@pytest.mark.parametrize("family", sorted(FAMILY_SPECIALS))
def test_detect_fim_picks_the_family(family: str) -> None:
    """Each family's vocabulary selects that family's template (Qwen vs CodeGemma included)."""
    tok = make_tokenizer(FAMILY_SPECIALS[family], BOS.get(family))
    fim = detect_fim(tok)
    assert fim is not None and fim.name == family
    assert fim == TEMPLATES[family]


@pytest.mark.parametrize("family", sorted(FAMILY_SPECIALS))
def test_build_lays_out_prefix_suffix_middle(family: str) -> None:
    """build() is exactly [*tokenizer prefix ids, PRE, *prefix, SUF, *suffix, MID]."""
    tok = make_tokenizer(FAMILY_SPECIALS[family], BOS.get(family))
    fim = detect_fim(tok)
    assert fim is not None
    pre, suf, mid = (tok.token_to_id(m) for m in (fim.prefix, fim.suffix, fim.middle))
    assert None not in (pre, suf, mid) and len({pre, suf, mid}) == 3
    prefix, suffix = tok.encode("def f ( x ) :"), tok.encode("return y")
    assert prefix == [1, 2, 3, 7, 4, 5] and suffix == [6, 10]
    bos = [tok.token_to_id(BOS[family])] if family in BOS else []
    assert tok.prefix_ids == bos
    assert fim.build(tok, prefix, suffix) == [*bos, pre, *prefix, suf, *suffix, mid]


@pytest.mark.parametrize("family", sorted(FAMILY_SPECIALS))
def test_stop_ids_are_the_present_end_tokens(family: str) -> None:
    """stop_ids holds the ids of the family's stop tokens that the vocabulary has, and no others."""
    tok = make_tokenizer(FAMILY_SPECIALS[family], BOS.get(family))
    fim = TEMPLATES[family]
    want = {tok.token_to_id(t) for t in fim.stops if t in FAMILY_SPECIALS[family]}
    assert want and fim.stop_ids(tok) == want


def test_qwen_and_codegemma_share_markers() -> None:
    """Only <|file_separator|> tells CodeGemma from Qwen2.5-Coder; their stops differ."""
    q, g = TEMPLATES["qwen2.5-coder"], TEMPLATES["codegemma"]
    assert (q.prefix, q.suffix, q.middle) == (g.prefix, g.suffix, g.middle)
    markers = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
    assert detect_fim(make_tokenizer(markers)) == q
    assert detect_fim(make_tokenizer([*markers, "<|file_separator|>"])) == g


def test_codellama_markers_without_the_space() -> None:
    """CodeLlama conversions with bare <PRE>/<SUF>/<MID> get a template using those tokens."""
    tok = make_tokenizer(["<s>", "</s>", "<PRE>", "<SUF>", "<MID>", "<EOT>"], bos="<s>")
    fim = detect_fim(tok)
    assert fim is not None and fim.name == "codellama" and fim.prefix_lead == " "
    assert (fim.prefix, fim.suffix, fim.middle) == ("<PRE>", "<SUF>", "<MID>")
    s, pre, suf, mid = (tok.token_to_id(t) for t in ("<s>", "<PRE>", "<SUF>", "<MID>"))
    assert fim.build(tok, [1, 2], [7]) == [s, pre, 1, 2, suf, 7, mid]
    assert fim.stop_ids(tok) == {tok.token_to_id("<EOT>"), tok.token_to_id("</s>")}


def test_incomplete_markers_mean_no_fim() -> None:
    """No template unless all three markers exist; marker_ids says which family is lacking."""
    assert detect_fim(make_tokenizer(["<|endoftext|>"])) is None
    tok = make_tokenizer(["<fim_prefix>", "<fim_suffix>"])  # no <fim_middle>
    assert detect_fim(tok) is None
    with pytest.raises(KeyError, match="starcoder"):
        TEMPLATES["starcoder"].marker_ids(tok)
    assert detect_fim(make_tokenizer(["<PRE>", "<SUF>"])) is None


def test_template_is_a_value() -> None:
    """Templates are frozen values: detection never hands out a mutable shared object."""
    with pytest.raises(AttributeError):
        TEMPLATES["starcoder"].prefix = "x"  # type: ignore[misc]


@pytest.mark.model
def test_smollm2_has_no_fim(smol: LoadedModel) -> None:
    """SmolLM2's vocabulary (<file_sep>, <filename>, but no FIM markers) means prefix-only prompting."""
    tok = Tokenizer.from_dir(Path(str(smol.info["dir"])))
    assert tok.token_to_id("<file_sep>") is not None and tok.token_to_id("<fim_prefix>") is None
    assert detect_fim(tok) is None and smol.fim is None
    assert tok.prefix_ids == []  # no BOS is prepended by its post-processor
