"""Several drafts per request: decoded together in one pass per token, and superposed decoding."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from decoding.engine import CompletionRequest, Engine
from decoding.ngram import NgramMix, NgramTable, Without
from decoding.sampling import Budget, Drafting, decode_draft, decode_together
from decoding.settings import Settings
from decoding.superposed import SuperposedConfig, decode_superposed
from models.loading import LoadedModel
from monitors.healing import HealingMonitor
from tests.unit.decoding.test_engine import CODE, NoStop

PROMPTS = [CODE, "class A:\n    def __init__(self, x):\n        self.", "for i in range(10):\n    print(", "x = [1, 2,"]


@pytest.fixture(scope="module")
def engine(tiny: LoadedModel) -> Engine:
    return Engine(tiny)


def _far(n: int = 10) -> Budget:
    return Budget(n, time.perf_counter() + 600)


def _prefill(tiny: LoadedModel, text: str) -> tuple[list[int], torch.Tensor]:
    ids = tiny.tokenizer.encode(text)
    tiny.backend.reset()
    return ids, tiny.backend.prefill(torch.tensor([ids]))[0, -1]


class Banned:
    """A monitor that forbids one token for good; forks share nothing (for counting forks)."""

    done = False

    def __init__(self, vocab_size: int, token: int):
        self.mask = torch.ones(vocab_size, dtype=torch.bool)
        self.mask[token] = False
        self.seen: list[int] = []

    def allowed(self) -> torch.Tensor:
        return self.mask

    def accept(self, token_id: int) -> None:
        self.seen.append(token_id)

    def rollback(self, n: int) -> None:
        del self.seen[len(self.seen) - n :]

    def fork(self) -> "Banned":
        new = Banned(len(self.mask), 0)
        new.mask, new.seen = self.mask, list(self.seen)
        return new


def test_tree_step_gives_each_row_the_logits_of_its_own_sequence(tiny: LoadedModel) -> None:
    """Two continuations side by side in one cache equal each run alone."""
    b = tiny.backend
    ids, _ = _prefill(tiny, CODE)
    p = len(ids)
    alone = []
    for a, c in ((11, 12), (13, 14)):
        b.truncate(p)
        b.step(torch.tensor([[a]]))
        alone.append(b.step(torch.tensor([[c]]))[0, -1])
    b.truncate(p)
    # step 1: tokens 11 and 13 at position p; step 2: 12 and 14 at p + 1, each seeing its own first token.
    vis1 = torch.zeros(2, p + 2, dtype=torch.bool)
    vis1[:, :p] = True
    vis1[0, p], vis1[1, p + 1] = True, True
    b.step_tree(torch.tensor([[11, 13]]), torch.tensor([p, p]), vis1)
    vis2 = torch.zeros(2, p + 4, dtype=torch.bool)
    vis2[:, :p] = True
    vis2[0, [p, p + 2]] = True
    vis2[1, [p + 1, p + 3]] = True
    out = b.step_tree(torch.tensor([[12, 14]]), torch.tensor([p + 1, p + 1]), vis2)[0]
    assert torch.allclose(out[0], alone[0], atol=1e-4)
    assert torch.allclose(out[1], alone[1], atol=1e-4)
    assert not torch.allclose(out[0], out[1], atol=1e-3)


@pytest.mark.parametrize("text", PROMPTS)
@pytest.mark.parametrize("heal", [b"", b"jo"])
def test_drafts_decoded_together_equal_drafts_decoded_one_by_one(tiny: LoadedModel, engine: Engine, text: str,
                                                                  heal: bytes) -> None:
    """Branching greedy drafts (and seeded samples) are the same tokens either way, healing included."""
    v = engine.vocab
    for sampled in (False, True):
        ids, logits = _prefill(tiny, text)
        alone = []
        for i in range(3):
            gen = torch.Generator().manual_seed(i) if sampled else None
            alone.append(decode_draft(tiny.backend, logits, v, [HealingMonitor(v, heal)], NoStop(), heal, set(),  # type: ignore[arg-type]
                                      _far(), 0.8 if sampled else 0.0, 1.0, gen, 0 if sampled else i))
            tiny.backend.truncate(len(ids))
        rows = [Drafting(v, [HealingMonitor(v, heal)], NoStop(), heal, set(), 0.8 if sampled else 0.0, 1.0,  # type: ignore[arg-type]
                         torch.Generator().manual_seed(i) if sampled else None, 0 if sampled else i)
                for i in range(3)]
        together = decode_together(tiny.backend, logits, rows, _far())
        assert tiny.backend.length == len(ids)  # rolled back to the prompt
        assert [d.token_ids for d in together] == [d.token_ids for d in alone]
        assert [d.text for d in together] == [d.text for d in alone]
        if not sampled:
            assert len({tuple(d.token_ids) for d in together}) == 3  # they branch


def test_each_draft_decoded_together_stops_on_its_own(tiny: LoadedModel, engine: Engine) -> None:
    """A draft that ends early (here: end of sequence) leaves the others going to their budget."""
    ids, logits = _prefill(tiny, CODE)
    second = int(torch.topk(logits, 2).indices[1])
    rows = [Drafting(engine.vocab, [], NoStop(), b"", {second}, branch=i) for i in range(3)]  # type: ignore[arg-type]
    out = decode_together(tiny.backend, logits, rows, _far(6))
    assert out[1].stop_reason == "eos" and out[1].token_ids == []
    assert [len(out[0].token_ids), len(out[2].token_ids)] == [6, 6]
    assert out[0].stop_reason == out[2].stop_reason == "max_tokens"


def test_engine_decodes_drafts_together_by_default(tiny: LoadedModel) -> None:
    """The engine's drafts are the same either way, and together takes fewer forward passes."""
    engine = Engine(tiny)
    calls = {"step": 0, "step_tree": 0}
    for name in calls:
        real = getattr(engine.backend, name)

        def counted(*a: object, _real=real, _name=name, **kw: object) -> torch.Tensor:
            calls[_name] += 1
            return _real(*a, **kw)

        setattr(engine.backend, name, counted)
    texts = {}
    for together in (False, True):
        engine.last = None
        s = Settings.from_dict({"drafts": 3, "maxNewTokens": 8, "mode": "block", "timeBudgetMs": 600_000,
                                "batchDrafts": together})[0]
        texts[together] = [d.text for d in engine.complete(CompletionRequest(CODE, len(CODE), settings=s)).drafts]
    assert texts[True] == texts[False] and len(texts[True]) == 3
    assert calls["step_tree"] <= 8 < calls["step"]


def test_superposed_with_one_draft_and_no_ngrams_is_greedy(tiny: LoadedModel, engine: Engine) -> None:
    """k=1: the superposition is the token's own embedding and the choice is the argmax."""
    for text in PROMPTS:
        ids, logits = _prefill(tiny, text)
        greedy = decode_draft(tiny.backend, logits, engine.vocab, [], NoStop(), b"", set(), _far())  # type: ignore[arg-type]
        tiny.backend.truncate(len(ids))
        start = Drafting(engine.vocab, [], NoStop(), b"", set())  # type: ignore[arg-type]
        (sup,) = decode_superposed(tiny.backend, logits, start, 1, _far(), None, ids)[:1]
        assert sup.token_ids == greedy.token_ids
        assert tiny.backend.length == len(ids)


def test_superposed_feeds_the_weighted_sum_of_the_drafts_newest_embeddings(tiny: LoadedModel, engine: Engine,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ids, logits = _prefill(tiny, CODE)
    b = tiny.backend
    fed: list[torch.Tensor] = []
    real = b.step

    def spy(ids_: torch.Tensor | None = None, embeds: torch.Tensor | None = None) -> torch.Tensor:
        assert embeds is not None and ids_ is None
        fed.append(embeds.clone())
        return real(embeds=embeds)

    monkeypatch.setattr(b, "step", spy)
    start = Drafting(engine.vocab, [], NoStop(), b"", set())  # type: ignore[arg-type]
    cfg = SuperposedConfig(alpha=0.0, temperature=1.0)
    drafts = decode_superposed(b, logits, start, 3, _far(2), None, ids, cfg)
    assert len(fed) == 2 and len(drafts) >= 3
    # After the first step the three drafts are the top 3 tokens, weighted by softmax of their log-probs.
    top = torch.topk(torch.log_softmax(logits, -1), 3)
    lp = top.values - torch.logsumexp(top.values, 0)
    w = torch.softmax(lp, 0)
    want = (b.embed(top.indices[None])[0] * w[:, None]).sum(0)
    assert torch.allclose(fed[0].view(-1), want, atol=1e-5)


def test_superposed_drafts_keep_their_own_monitors_and_are_distinct(tiny: LoadedModel, engine: Engine) -> None:
    """Every draft re-types the healed text and never uses a banned token; forks are independent."""
    text = CODE
    ids, logits = _prefill(tiny, text[:-2])
    banned = int(torch.topk(logits, 5).indices[4])
    v = engine.vocab
    start = Drafting(v, [HealingMonitor(v, b"jo"), Banned(v.vocab_size, banned)], NoStop(), b"jo", set())  # type: ignore[arg-type]
    drafts = decode_superposed(tiny.backend, logits, start, 3, _far(6), None, ids)
    assert len({tuple(d.token_ids) for d in drafts}) == len(drafts) >= 3
    for d in drafts:
        assert v.token_bytes(d.token_ids[0]).startswith(b"j") or b"jo".startswith(v.token_bytes(d.token_ids[0]))
        assert banned not in d.token_ids


def test_ngram_mix_interpolates_orders_and_sources() -> None:
    doc = NgramTable.build(np.array([1, 2, 3, 1, 2, 4, 1, 2, 3]), 10)
    other = NgramTable.build(np.array([1, 2, 5]), 10)
    cands = np.array([3, 4, 5, 6])
    only_bigrams = NgramMix([(doc, 1.0)], {2: 1.0})
    assert np.allclose(only_bigrams.probs([9, 2], cands), [2 / 3, 1 / 3, 0, 0])
    mixed = NgramMix([(doc, 1.0), (other, 1.0)], {3: 1.0})  # trigram "1 2 ->": doc 3,4,3; other 5
    assert np.allclose(mixed.probs([1, 2], cands), [(2 / 3) / 2, (1 / 3) / 2, 1 / 2, 0])
    assert np.allclose(mixed.probs([7, 7], cands), 0)  # nobody knows "7 7"
    # A table minus the saved copy of the open file: what is left is the rest of the workspace.
    both = NgramTable.build(np.array([1, 2, 3, 1, 2, 4, 1, 2, 3, -1, 1, 2, 5]), 10)
    assert np.allclose(NgramMix([(Without(both, doc), 1.0)], {3: 1.0}).probs([1, 2], cands), [0, 0, 1, 0])


def test_engine_superposed_returns_distinct_ranked_drafts_with_workspace_ngrams(tiny: LoadedModel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "util.py").write_text("def join_all(parts):\n    return os.path.join(*parts)\n" * 3)
    path = tmp_path / "pkg" / "main.py"
    path.write_text(CODE)
    engine = Engine(tiny)
    table = None
    for _ in range(100):  # built in the background
        table = engine.workspace_table(tmp_path, path)
        if table is not None:
            break
        time.sleep(0.05)
    assert table is not None
    ctx = tiny.tokenizer.encode("    return os.path")
    assert table.run(2, ctx)[0].size > 0  # the workspace's files are in it
    s = Settings.from_dict({"drafts": 3, "decoder": "superposed", "maxNewTokens": 6, "mode": "block",
                            "timeBudgetMs": 600_000})[0]
    r = engine.complete(CompletionRequest(CODE, len(CODE), str(path), str(tmp_path), settings=s))
    assert 1 <= len(r.drafts) <= 3
    assert len({d.text for d in r.drafts}) == len(r.drafts)
    assert all(d.text.strip() for d in r.drafts)
    assert engine.backend.length == len(engine.cached)  # the cache holds the prompt only


@pytest.mark.parametrize("together", [False, True])
def test_a_blank_draft_is_replaced_by_the_next_branch(tiny: LoadedModel, together: bool) -> None:
    """A branch whose first token ends the sequence gives way to the next branch."""
    engine = Engine(tiny)
    s = Settings.from_dict({"drafts": 4, "maxNewTokens": 4, "mode": "block", "timeBudgetMs": 600_000,
                            "batchDrafts": together, "monitors": False, "tokenHealing": False})[0]
    four = engine.complete(CompletionRequest(CODE, len(CODE), settings=s)).drafts
    assert len(four) == 4
    engine.last = None
    s = Settings.from_dict({**s.to_wire(), "drafts": 3})[0]
    blank = four[1].token_ids[0]
    engine.tok.eos_ids.add(blank)  # that branch now ends at once, blank
    try:
        drafts = engine.complete(CompletionRequest(CODE, len(CODE), settings=s)).drafts
    finally:
        engine.tok.eos_ids.discard(blank)
    # Branches 0-3 were four[*] (ranked); one of 1-3 is now blank and the other three remain.
    assert drafts[0].text == four[0].text
    assert {d.text for d in drafts} == {d.text for d in four} - {four[1].text}
    assert len(drafts) == 3
