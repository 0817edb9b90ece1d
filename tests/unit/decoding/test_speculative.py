"""Self-speculative decoding on tiny random models: exactly greedy's output, monitors included."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from decoding.engine import CompletionRequest, Engine
from decoding.settings import Settings
from decoding.speculative import MIN_TIMED, SpecConfig
from models.loading import LoadedModel, load_model
from tests.unit.decoding.helpers import headed_tiny

PROMPTS = [
    "import os\n\n\ndef join_all(parts):\n    result = os.path.",
    "def add(a, b):\n    return a",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.",
    "import json\n\ndata = json.dumps(",
    "for i in range(10):\n    if i % 2 == 0:\n        print(",
    "x = [1, 2, 3]\ny = {k: v for k, v in zip(x, ",
    "# a comment with ünïcode and emoji 🎉\nvalue = 'text",
    "def f(first, second, *, flag=False):\n    pass\n\nf(1, ",
    "while True:\n    line = input()\n    if not line:\n        ",
    "from collections import ",
    "async def main():\n    await asyncio.sleep(",
    "numbers = sorted(set(numbers), key=lambda n: -n)\nprint(numbers[",
    "import os\n\n\ndef split(p):\n    sep = os.",  # the name monitor's bonus for `sep`
]


def _settings(**kw: object) -> Settings:
    base = {"drafts": 2, "maxNewTokens": 24, "mode": "block", "timeBudgetMs": 600_000}
    return Settings.from_dict({**base, **kw})[0]


def _tokens(engine: Engine, text: str, **kw: object) -> list[list[int]]:
    engine.cached = []  # every run starts cold: KV reuse is tested elsewhere
    res = engine.complete(CompletionRequest(text, len(text), settings=_settings(**kw)))
    return [d.token_ids for d in res.drafts]


@pytest.fixture(scope="module")
def headed() -> LoadedModel:
    """A tiny random model (4 layers) with random exit adapters at layers 1 and 2 and a
    shortlist of a third of the vocabulary."""
    return headed_tiny(seed=1, shortlist_every=3)


@pytest.mark.parametrize("monitors", [False, True])
def test_speculative_output_is_greedy_output(headed: LoadedModel, monitors: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(headed)
    assert engine.spec_cfg is not None and engine.spec_cfg.layers == [1, 2]
    # Always draft to the full length, and probe often, so that rollback and the probes run
    # (the adapted choice would soon stop drafting with these random heads).
    engine.spec_cfg = dataclasses.replace(engine.spec_cfg, eta=0.0, max_draft=3, probe_every=2)
    monkeypatch.setattr(SpecConfig, "adapt", lambda self, n_layers: None)
    drafted = 0
    for text in PROMPTS:
        plain = _tokens(engine, text, monitors=monitors)
        engine.cached = []
        res = engine.complete(CompletionRequest(text, len(text), settings=_settings(monitors=monitors,
                                                                                    speculative=True)))
        assert [d.token_ids for d in res.drafts] == plain, text
        drafted += sum(int(d.stats.get("spec_drafted", 0)) - sum(int(d.stats.get(f"spec_{k}_drafted", 0))
                                                                  for k in ("lookup", "near", "ngram"))
                       for d in res.drafts)
    assert drafted > 20 and engine.spec_cfg.alpha  # the exit heads drafted, and acceptance was measured


def test_when_the_late_layers_do_nothing_every_draft_is_accepted() -> None:
    """Zero the late layers' outputs: the exit at layer 2 then predicts exactly the final token."""
    loaded = load_model("tiny")
    for block in loaded.backend.model.model.layers[2:]:
        torch.nn.init.zeros_(block.self_attn.o_proj.weight)
        torch.nn.init.zeros_(block.mlp.down_proj.weight)
    engine = Engine(loaded)
    # rounds=1: no probe (at round 0) re-tunes the draft length this test fixes at 4.
    engine.spec_cfg = SpecConfig(layers=[2], layer=2, max_draft=4, eta=0.0, probe_every=1000, lookup=0, ngram=0,
                                 rounds=1)
    text = PROMPTS[0]
    plain = _tokens(engine, text, drafts=1)
    engine.cached = []
    res = engine.complete(CompletionRequest(text, len(text), settings=_settings(speculative=True, drafts=1)))
    assert [d.token_ids for d in res.drafts] == plain
    t = res.timings
    # Every token after the first comes from a round (its first logits) or from an accepted draft.
    assert t["spec_rounds"] + t["spec_accepted"] + 1 >= t["generated_tokens"]
    assert t["spec_rounds"] <= t["generated_tokens"] / 3  # four drafts accepted per full pass, nearly always


def test_a_confidence_floor_stops_drafting(headed: LoadedModel) -> None:
    engine = Engine(headed)
    engine.spec_cfg = dataclasses.replace(engine.spec_cfg, eta=1.01, probe_every=1000, lookup=0, ngram=0)  # nothing is confident enough
    text = PROMPTS[1]
    assert _tokens(engine, text, speculative=True) == _tokens(engine, text)
    engine.cached = []
    res = engine.complete(CompletionRequest(text, len(text), settings=_settings(speculative=True)))
    assert res.timings["spec_drafted"] == 0 and res.timings["spec_rounds"] > 0


def test_the_adapted_choice_maximises_expected_tokens_per_cost() -> None:
    # Rounds measured as modelled: the weight shares alone decide.
    cfg = SpecConfig(layers=[4, 8, 15], layer=8, alpha={4: 0.3, 8: 0.9, 15: 0.95}, round_ms=[100.0, 100.0])
    cfg.adapt(30)
    assert cfg.layer == 8 and cfg.max_draft >= 3  # good acceptance at a cheap layer: draft far
    cfg = SpecConfig(layers=[4, 8, 15], layer=8, alpha={4: 0.1, 8: 0.1, 15: 0.1}, round_ms=[100.0, 100.0])
    cfg.adapt(30)
    assert cfg.max_draft == 1  # hopeless drafts: keep them short
    # Exit-head rounds measured at 1.2x what the weight shares say: then plain passes win.
    cfg.round_ms = [120.0, 100.0]
    cfg.adapt(30)
    assert cfg.overhead() == pytest.approx(1.2) and cfg.max_draft == 0
    cfg = SpecConfig(layers=[4, 8, 15], layer=8, alpha={4: 0.3, 8: 0.9, 15: 0.95}, round_ms=[120.0, 100.0])
    cfg.adapt(30)
    assert cfg.layer == 8 and cfg.max_draft >= 3  # good heads still pay


def test_drafting_measured_dear_goes_back_to_full_passes(headed: LoadedModel,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit-head rounds that take far longer than modelled (as on the default model) end the
    drafting at the next probe, and the backend is told: full passes only from here."""
    engine = Engine(headed)
    assert engine.spec_cfg is not None and engine.spec_cfg.max_draft == 0  # until a probe says otherwise
    engine.spec_cfg = dataclasses.replace(engine.spec_cfg, eta=0.0, max_draft=3, probe_every=1, lookup=0, ngram=0,
                                          alpha={1: 0.9, 2: 0.9}, round_ms=[10_000.0, 100.0])
    calls: list[int] = []
    monkeypatch.setattr(headed.backend, "prepare_full", lambda: calls.append(engine.backend.length))
    text = PROMPTS[1]
    assert _tokens(engine, text, speculative=True) == _tokens(engine, text)
    assert engine.spec_cfg.max_draft == 0 and len(calls) == 1 and engine.spec_cfg.overhead() > 5


def test_lookup_drafts_come_from_the_context_and_stay_lossless(headed: LoadedModel) -> None:
    engine = Engine(headed)
    engine.spec_cfg = dataclasses.replace(engine.spec_cfg, probe_every=1000)
    # Repetitive text: the tiny random model's greedy output loops, and lookup finds the loop.
    text = "a = b\n" * 3 + "value = compute(value)\n" * 4 + "value = "
    plain = _tokens(engine, text, drafts=1, maxNewTokens=40)
    engine.cached = []
    res = engine.complete(CompletionRequest(text, len(text), settings=_settings(speculative=True, drafts=1,
                                                                                 maxNewTokens=40)))
    assert [d.token_ids for d in res.drafts] == plain
    assert res.timings["spec_drafted"] > 0


def test_lookup_index_finds_the_previous_occurrence() -> None:
    from decoding.speculative import Speculator

    class Cfg:  # only what the lookup reads
        num_layers = 4

    class FakeBackend:
        config = Cfg()

    cfg = SpecConfig(layers=[1], layer=1, lookup=3, lookup_ngram=2)
    spec = Speculator(FakeBackend(), cfg, {0}, context=[5, 6, 7, 8, 9, 5, 6])  # type: ignore[arg-type]
    assert spec._lookup() == [7, 8, 9]  # `5 6` was followed by `7 8 9`
    spec._remember(7)
    assert spec._lookup() == [8, 9, 5]  # `6 7`
    spec._remember(1)
    assert spec._lookup() == []  # `7 1` never occurred


def test_free_draft_length_follows_measured_costs_and_acceptance() -> None:
    cfg = SpecConfig(layers=[2], layer=2)
    for t, ms in ((1, 30.0), (2, 31.0), (3, 42.0), (4, 43.0), (5, 50.0)):
        for _ in range(MIN_TIMED):
            cfg.record_pass(t, ms)
    cfg.hits["ngram"] = [1.0, 9.0]  # 10% acceptance
    assert cfg.free_length("ngram", 4) == 1  # a second token in the pass is nearly free: still worth one guess
    cfg.hits["lookup"] = [95.0, 5.0]
    assert cfg.free_length("lookup", 4) == 4  # nearly always right: send them all
    cfg.record_pass(2, 1000.0)  # if a 2-token pass were expensive, a poor guess would not be sent
    cfg.pass_ms[2] = 60.0
    assert cfg.free_length("ngram", 1) == 0


def test_an_untimed_pass_length_is_tried_then_kept_only_if_it_pays() -> None:
    cfg = SpecConfig(layers=[2], layer=2)
    cfg.hits["lookup"] = [60.0, 40.0]  # 60% acceptance
    for _ in range(MIN_TIMED):
        cfg.record_pass(1, 30.0)
        cfg.record_pass(2, 38.0)
    # A 3-token pass has not been timed: assumed to cost what 2 tokens do, so two guesses go.
    assert cfg.pass_cost(3) == 38.0
    assert cfg.free_length("lookup", 2) == 2
    # Timed at 40 ms (ONNX Runtime's shape: the third token nearly free), it is kept.
    for ms in (40.0, 90.0, 41.0):  # one slow pass among the first timings does not decide
        cfg.record_pass(3, ms)
    assert cfg.pass_cost(3) == 41.0 and cfg.free_length("lookup", 2) == 2
    # Timed at 57 ms (torch's shape: half a step more), a second guess no longer pays.
    dear = SpecConfig(layers=[2], layer=2, hits={"lookup": [60.0, 40.0]})
    for t, ms in ((1, 30.0), (2, 31.0), (3, 57.0)):
        for _ in range(MIN_TIMED):
            dear.record_pass(t, ms)
    assert dear.free_length("lookup", 2) == 1
    # Untimed lengths above a timed one borrow its cost, not a lower one's.
    assert dear.pass_cost(4) == 57.0


def test_ngram_drafts_stay_lossless_and_are_counted(headed: LoadedModel) -> None:
    from concurrent.futures import Future

    from decoding.ngram import NgramTable

    engine = Engine(headed)
    engine.spec_cfg = dataclasses.replace(engine.spec_cfg, probe_every=1000, lookup=0)
    text = PROMPTS[0]
    plain = _tokens(engine, text, drafts=1)
    # A table that has seen exactly the greedy output predicts it: its drafts are accepted.
    ids = engine.tok.encode(text)[-3:] + plain[0]
    done: Future[NgramTable] = Future()
    done.set_result(NgramTable.build(torch.tensor(ids * 2).numpy(), headed.backend.config.vocab_size))
    engine._ngrams = done
    engine.cached = []
    res = engine.complete(CompletionRequest(text, len(text), settings=_settings(speculative=True, drafts=1)))
    assert [d.token_ids for d in res.drafts] == plain
    t = res.timings
    assert t["spec_ngram_drafted"] > 0 and t["spec_ngram_accepted"] > 0
    assert t["spec_ngram_accepted"] <= t["spec_ngram_drafted"]
