"""Dynamic early exit and stop-on-uncertain on the tiny random model."""

from __future__ import annotations

import logging

import pytest
import torch

from decoding.early_exit import EarlyExiter, ExitConfig, calibrate, exit_config
from decoding.engine import CompletionRequest, Engine
from decoding.settings import Settings
from models.loading import LoadedModel, load_model
from tests.unit.decoding.helpers import headed_tiny

TEXT = "import os\n\n\ndef join_all(parts):\n    result = os.path."


def _settings(**kw: object) -> Settings:
    base = {"drafts": 1, "maxNewTokens": 16, "mode": "block", "timeBudgetMs": 600_000}
    return Settings.from_dict({**base, **kw})[0]


def _complete(engine: Engine, text: str = TEXT, **kw: object) -> tuple[list[list[int]], dict[str, float]]:
    engine.cached = []
    res = engine.complete(CompletionRequest(text, len(text), settings=_settings(**kw)))
    return [d.token_ids for d in res.drafts], res.timings


@pytest.fixture()
def headed() -> LoadedModel:
    return headed_tiny(seed=2, thresholds={1: 0.5, 2: 0.5})


def test_calibrate_picks_the_lowest_threshold_that_keeps_the_precision() -> None:
    conf = torch.tensor([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    agree = torch.tensor([True, True, True, True, False, True, False, False])
    assert calibrate(conf, agree, precision=1.0, min_support=1) == pytest.approx(0.8)  # the top four all agree
    assert calibrate(conf, agree, precision=0.8, min_support=1) == pytest.approx(0.6)  # 5 of 6
    assert calibrate(conf, agree, precision=1.0, min_support=5) is None  # not enough exits at 100%


def test_never_confident_means_plain_greedy(headed: LoadedModel) -> None:
    engine = Engine(headed)
    plain, _ = _complete(engine)
    engine.exit_cfg = ExitConfig({1: 1.01, 2: 1.01})
    got, t = _complete(engine, earlyExit=True)
    assert got == plain
    assert t["exit_mean_layers"] == headed.backend.config.num_layers


def test_always_confident_exits_at_the_first_head_and_fills_the_skipped_layers(headed: LoadedModel) -> None:
    engine = Engine(headed)
    engine.exit_cfg = ExitConfig({1: 0.0, 2: 0.0})
    got, t = _complete(engine, earlyExit=True)
    b = headed.backend
    assert got and t["exit_mean_layers"] == 1.0
    assert len(set(b.layer_lengths())) == 1  # every layer holds every position
    # The skipped layers' K/V for a generated position are the state-copied ones from layer 1's output.
    exiter = EarlyExiter(b, engine.exit_cfg)
    n = b.length
    logits = exiter.next_logits(got[0][-1], [])
    assert b.layer_lengths() == [n + 1] * b.config.num_layers
    b.truncate(n)
    h = b.run_layers(b.embed(torch.tensor([[got[0][-1]]])), 0, 1)
    torch.testing.assert_close(logits, b.exit_logits(h, 1)[0, -1])
    b.truncate(n)


def test_early_exit_changes_which_layers_run_not_the_interface(headed: LoadedModel) -> None:
    engine = Engine(headed)
    got, t = _complete(engine, earlyExit=True, monitors=True)
    assert got and got[0]
    assert 1.0 <= t["exit_mean_layers"] <= headed.backend.config.num_layers


def test_a_model_without_thresholds_has_early_exit_off_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    loaded = load_model("tiny")
    with caplog.at_level(logging.INFO, logger="decoding.early_exit"):
        assert exit_config(loaded.backend) is None
    assert "early exit" in caplog.text
    engine = Engine(loaded)
    plain, _ = _complete(engine)
    got, t = _complete(engine, earlyExit=True)
    assert got == plain and "exit_mean_layers" not in t


def test_stop_on_uncertain_cuts_the_draft_before_the_first_unsure_token(tiny: LoadedModel) -> None:
    engine = Engine(tiny)
    engine.cached = []
    s = _settings(monitors=False, tokenHealing=False)
    full = engine.complete(CompletionRequest(TEXT, len(TEXT), settings=s)).drafts[0]
    assert len(full.margins) == len(full.confidences) == len(full.token_ids) >= 4
    assert all(0 <= m <= c <= 1 for m, c in zip(full.margins, full.confidences))
    # A threshold just above the margin of token j (j > 0, the lowest after the first).
    j = 1 + min(range(len(full.margins) - 1), key=lambda i: full.margins[i + 1])
    t = full.margins[j] + 1e-6
    cut = next(i for i, m in enumerate(full.margins) if m < t)
    engine.cached = []
    s2 = _settings(monitors=False, tokenHealing=False, stopOnUncertain=True, uncertainThreshold=t)
    res = engine.complete(CompletionRequest(TEXT, len(TEXT), settings=s2))
    if cut == 0:
        assert res.drafts == []  # unsure from the start: no suggestion at all
    else:
        d = res.drafts[0] if res.drafts else None
        assert d is None or (d.token_ids == full.token_ids[:cut] and d.stop_reason == "uncertain")
        assert d is None or full.text.startswith(d.text.rstrip())


def test_an_unsure_first_token_gives_no_suggestion(tiny: LoadedModel) -> None:
    engine = Engine(tiny)
    engine.cached = []
    s = _settings(monitors=False, stopOnUncertain=True, uncertainThreshold=1.0)
    res = engine.complete(CompletionRequest(TEXT, len(TEXT), settings=s))
    assert res.drafts == []  # the random model is never certain
