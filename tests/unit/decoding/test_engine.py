"""Decoding and the engine on the tiny random model: cache correctness, budgets, healing."""

from __future__ import annotations

import time

import pytest
import torch

from decoding.engine import CompletionRequest, Engine, common_prefix
from decoding.prompt import build_prompt
from decoding.sampling import Budget, choose, decode_draft, top_p_filter
from decoding.settings import Settings
from models.loading import LoadedModel
from monitors.healing import HealingMonitor

CODE = "import os\n\n\ndef join_all(parts):\n    result = os.path.jo"


class NoStop:
    """Stopping rules that never fire, so drafts run to the token budget."""

    def cut(self, text: str) -> int | None:
        return None

    def finish(self, text: str, complete: bool = True) -> str:
        return text


class Blocker:
    """A monitor whose constraint can never be met."""

    done = False

    def __init__(self, vocab_size: int):
        self.n = vocab_size

    def allowed(self) -> torch.Tensor:
        return torch.zeros(self.n, dtype=torch.bool)

    def accept(self, token_id: int) -> None: ...
    def rollback(self, n: int) -> None: ...
    def fork(self) -> "Blocker":
        return self


@pytest.fixture(scope="module")
def engine(tiny: LoadedModel) -> Engine:
    return Engine(tiny)


def _settings(**kw: object) -> Settings:
    base = {"drafts": 1, "maxNewTokens": 12, "mode": "block", "timeBudgetMs": 600_000}
    return Settings.from_dict({**base, **kw})[0]


def _far() -> Budget:
    return Budget(16, time.perf_counter() + 600)


def test_greedy_with_cache_equals_greedy_without(tiny: LoadedModel, engine: Engine) -> None:
    ids = tiny.tokenizer.encode(CODE)
    backend = tiny.backend
    backend.reset()
    logits = backend.prefill(torch.tensor([ids]))[0, -1]
    draft = decode_draft(backend, logits, engine.vocab, [], NoStop(), b"", set(), _far())  # type: ignore[arg-type]
    # Reference: no cache at all, the whole sequence recomputed for every token.
    seq = list(ids)
    for _ in range(16):
        backend.reset()
        seq.append(int(backend.prefill(torch.tensor([seq]))[0, -1].argmax()))
    assert draft.token_ids == seq[len(ids) :]
    engine.cached = []  # the backend was reset behind the engine's back


def test_kv_reuse_gives_the_same_drafts_as_a_cold_run(tiny: LoadedModel) -> None:
    warm, cold = Engine(tiny), Engine(tiny)
    text = CODE * 3
    warm.complete(CompletionRequest(text, len(text), settings=_settings()))
    edited = text + "i"
    warm.last = None  # measure the KV path, not the typed-through drafts
    a = warm.complete(CompletionRequest(edited, len(edited), settings=_settings()))
    b = cold.complete(CompletionRequest(edited, len(edited), settings=_settings(kvReuse=False)))
    assert a.timings["reused_tokens"] >= a.timings["prompt_tokens"] - 4
    assert b.timings["reused_tokens"] == 0
    assert [(d.text, d.token_ids) for d in a.drafts] == [(d.text, d.token_ids) for d in b.drafts]


def test_one_character_edit_in_a_long_file_prefills_a_few_tokens(tiny: LoadedModel) -> None:
    engine = Engine(tiny)
    text = "".join(f"def handler_{i}(request):\n    return respond(request, code={i})\n\n" for i in range(90))
    first = engine.complete(CompletionRequest(text, len(text), settings=_settings(maxNewTokens=1)))
    assert first.timings["prompt_tokens"] > 1200
    edited = text + "d"
    engine.last = None
    again = engine.complete(CompletionRequest(edited, len(edited), settings=_settings(maxNewTokens=1)))
    assert again.timings["prefilled_tokens"] <= 4


def test_edit_in_the_middle_reuses_the_part_before_it(tiny: LoadedModel) -> None:
    engine = Engine(tiny)
    text = CODE * 4
    engine.complete(CompletionRequest(text, len(text), settings=_settings(maxNewTokens=1)))
    mid = len(text) // 2
    edited = text[:mid] + "# note\n" + text[mid:]
    r = engine.complete(CompletionRequest(edited, len(edited), settings=_settings(maxNewTokens=1)))
    p = build_prompt(tiny.tokenizer, text, len(text), 1536)
    q = build_prompt(tiny.tokenizer, edited, len(edited), 1536)
    assert r.timings["reused_tokens"] == min(common_prefix(p.ids, q.ids), len(q.ids) - 1)
    assert 0 < r.timings["reused_tokens"] < r.timings["prompt_tokens"]


def test_token_budget_and_time_budget(engine: Engine) -> None:
    r = engine.complete(CompletionRequest(CODE, len(CODE), settings=_settings(maxNewTokens=5, mode="block")))
    assert all(len(d.token_ids) <= 5 for d in r.drafts)
    logits = torch.zeros(engine.vocab.vocab_size)
    past = Budget(50, time.perf_counter() - 1)
    d = decode_draft(engine.backend, logits, engine.vocab, [], NoStop(), b"", set(), past)  # type: ignore[arg-type]
    assert d.token_ids == [] and d.stop_reason == "time"


def test_cancel_stops_decoding(engine: Engine) -> None:
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 3

    r = engine.complete(CompletionRequest(CODE, len(CODE), settings=_settings(maxNewTokens=40)), cancelled)
    assert all(len(d.token_ids) <= 3 for d in r.drafts)


def test_unsatisfiable_monitor_ends_the_draft(engine: Engine) -> None:
    logits = torch.randn(engine.vocab.vocab_size)
    blocker = Blocker(engine.vocab.vocab_size)
    d = decode_draft(engine.backend, logits, engine.vocab, [blocker], NoStop(), b"", set(), _far())  # type: ignore[list-item,arg-type]
    assert d.token_ids == [] and d.stop_reason == "monitor"


class Preferrer:
    """A monitor that allows everything and adds a bonus to one token (or fails doing so)."""

    done = False

    def __init__(self, vocab_size: int, token: int, bonus: float, broken: bool = False):
        self.n, self.token, self.bonus, self.broken = vocab_size, token, bonus, broken
        self.accepted: list[int] = []

    def allowed(self) -> None:
        return None

    def bias(self) -> torch.Tensor:
        if self.broken:
            raise RuntimeError("analysis failed")
        out = torch.zeros(self.n)
        out[self.token] = self.bonus
        return out

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def rollback(self, n: int) -> None: ...
    def fork(self) -> "Preferrer":
        return self


def test_a_monitor_bonus_changes_the_greedy_choice_by_its_size(engine: Engine) -> None:
    logits = torch.zeros(engine.vocab.vocab_size)
    logits[10], logits[20] = 5.0, 3.0
    budget = Budget(1, time.perf_counter() + 600)
    for bonus, expected in ((1.5, 10), (2.5, 20)):
        m = Preferrer(engine.vocab.vocab_size, 20, bonus)
        d = decode_draft(engine.backend, logits, engine.vocab, [m], NoStop(), b"", set(), budget)  # type: ignore[list-item,arg-type]
        assert d.token_ids == [expected] and m.accepted == [expected]
    # The draft's log-probability stays the model's own, not the biased one.
    assert d.logprobs[0] == pytest.approx(float(torch.log_softmax(logits, -1)[20]))
    broken = Preferrer(engine.vocab.vocab_size, 20, 9.0, broken=True)
    d = decode_draft(engine.backend, logits, engine.vocab, [broken], NoStop(), b"", set(), budget)  # type: ignore[list-item,arg-type]
    assert d.token_ids == [10] and broken.accepted == []  # a failing monitor is dropped, the draft goes on


def test_healing_reproduces_the_removed_text(tiny: LoadedModel, engine: Engine) -> None:
    prompt = build_prompt(tiny.tokenizer, CODE, len(CODE), 1536)
    assert prompt.heal.endswith("jo")
    backend = tiny.backend
    backend.reset()
    engine.cached = []
    logits = backend.prefill(torch.tensor([prompt.ids]))[0, -1]
    heal = prompt.heal.encode()
    healer = HealingMonitor(engine.vocab, heal)
    d = decode_draft(backend, logits, engine.vocab, [healer], NoStop(), heal, set(), _far())  # type: ignore[arg-type]
    out = engine.vocab.text_bytes(d.token_ids)
    assert out.startswith(heal)
    assert d.text == out[len(heal) :].decode("utf-8", errors="ignore")


def test_sampling_is_seeded(engine: Engine) -> None:
    s = _settings(decoder="sampling", temperature=1.5, top_p=1.0, maxNewTokens=8)
    a = engine.complete(CompletionRequest(CODE, len(CODE), settings=s))
    b = engine.complete(CompletionRequest(CODE, len(CODE), settings=s))
    c = engine.complete(CompletionRequest(CODE, len(CODE), settings=_settings(
        decoder="sampling", temperature=1.5, top_p=1.0, maxNewTokens=8, seed=7)))
    assert [d.token_ids for d in a.drafts] == [d.token_ids for d in b.drafts]
    assert [d.token_ids for d in a.drafts] != [d.token_ids for d in c.drafts]


def test_drafts_are_distinct_and_non_empty(engine: Engine) -> None:
    r = engine.complete(CompletionRequest(CODE, len(CODE), settings=_settings(drafts=4, temperature=2.0)))
    texts = [d.text for d in r.drafts]
    assert len(texts) == len(set(texts)) and all(t.strip() for t in texts)


def test_top_p_keeps_exactly_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = top_p_filter(logits, 0.7).isfinite().tolist()
    assert kept == [True, True, False, False]
    assert top_p_filter(logits, 0.85).isfinite().tolist() == [True, True, True, False]
    assert choose(logits, 0.0, 1.0, None) == 0
    g = torch.Generator().manual_seed(0)
    draws = {choose(logits, 1.0, 0.7, g) for _ in range(200)}
    assert draws == {0, 1}


def test_greedy_drafts_branch_at_the_first_free_token(tiny: LoadedModel, engine: Engine) -> None:
    """Draft i starts with a different token right after the healed text, then is greedy."""
    text = "x = 1\n"
    r = engine.complete(CompletionRequest(text, len(text), settings=_settings(drafts=3, maxNewTokens=4)))
    heal = build_prompt(tiny.tokenizer, text, len(text), 1536).heal.encode()
    assert len(r.drafts) >= 2
    firsts = []
    for d in r.drafts:
        assert engine.vocab.text_bytes(d.token_ids).startswith(heal)
        n, k = 0, 0
        while n < len(heal):  # the branch is the first token after the healed bytes
            n += len(engine.vocab.token_bytes(d.token_ids[k]))
            k += 1
        firsts.append(d.token_ids[k])
    assert len(set(firsts)) == len(firsts)


@pytest.mark.parametrize("together", [False, True])
def test_slow_prefill_leaves_the_first_draft_time(tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch,
                                                  together: bool) -> None:
    """When reading the prompt eats the whole budget, the first draft still decodes; drafts run one
    after another don't start, drafts decoded together share the first one's time."""
    engine = Engine(tiny)
    real = engine.backend.prefill

    def slow(ids: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        time.sleep(0.3)
        return real(ids, all_logits)

    monkeypatch.setattr(engine.backend, "prefill", slow)
    s = _settings(drafts=3, timeBudgetMs=200, maxNewTokens=3, batchDrafts=together)
    r = engine.complete(CompletionRequest(CODE, len(CODE), settings=s))
    assert r.timings["generated_tokens"] >= 1
    assert r.timings["prefill_ms"] >= 300
    assert len(r.drafts) == (3 if together else 1)


def test_typing_the_start_of_a_draft_serves_the_rest_without_the_model(tiny: LoadedModel) -> None:
    engine = Engine(tiny)
    text = "def area(r):\n    return "
    tail = "\n\nprint(area(2))\n"
    doc = text + tail
    first = engine.complete(CompletionRequest(doc, len(text), settings=_settings(drafts=3)))
    assert first.drafts
    calls = engine.stats["requests"]
    typed = first.drafts[0].text[:2]
    doc2 = text + typed + tail
    again = engine.complete(CompletionRequest(doc2, len(text) + 2, settings=_settings(drafts=3)))
    assert again.timings.get("typed_through") == 1.0 and engine.stats["requests"] == calls
    expected = [d.text[2:] for d in first.drafts if d.text.startswith(typed) and d.text[2:].strip()]
    assert [d.text for d in again.drafts] == expected
    # Anything else goes back to the model: another character, other settings, a changed
    # suffix, a new line, or reuse switched off.
    other = next(c for c in "qzx#@" if not any(d.text.startswith(c) for d in first.drafts))
    misses = [
        CompletionRequest(text + other + tail, len(text) + 1, settings=_settings(drafts=3)),
        CompletionRequest(doc2, len(text) + 2, settings=_settings(drafts=2)),
        CompletionRequest(text + typed + tail + "#", len(text) + 2, settings=_settings(drafts=3)),
        CompletionRequest(text + "\n" + tail, len(text) + 1, settings=_settings(drafts=3)),
        CompletionRequest(doc2, len(text) + 2, settings=_settings(drafts=3, kvReuse=False)),
    ]
    remembered = engine.last
    for req in misses:
        engine.last = remembered  # each case against the first answer
        before = engine.stats["requests"]
        result = engine.complete(req)
        assert "typed_through" not in result.timings and engine.stats["requests"] == before + 1


def test_healing_wins_when_monitors_disagree(tiny: LoadedModel, engine: Engine) -> None:
    """A monitor that allows nothing cannot stop the draft from re-typing what the user typed."""
    ids = tiny.tokenizer.encode("x = 1\nvalue = ")
    backend = tiny.backend
    backend.reset()
    engine.cached = []
    logits = backend.prefill(torch.tensor([ids]))[0, -1]
    healer = HealingMonitor(engine.vocab, b"va")
    draft = decode_draft(backend, logits, engine.vocab, [healer, Blocker(engine.vocab.vocab_size)],  # type: ignore[list-item]
                         NoStop(), b"", set(), _far())  # type: ignore[arg-type]
    assert engine.vocab.text_bytes(draft.token_ids).startswith(b"va")  # healed despite the blocker
    assert draft.stop_reason == "monitor"  # then the blocker, alone, ends the draft
