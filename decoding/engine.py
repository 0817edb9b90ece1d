"""The engine: a completion request in, ranked drafts out, reusing the KV cache across requests."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from decoding.prompt import Prompt, build_prompt
from decoding.sampling import Budget, Draft, Drafting, decode_draft, decode_together, novel
from decoding.settings import Settings
from decoding.early_exit import EarlyExiter, exit_config
from decoding.ngram import NgramMix, NgramTable, Without, source_files, stdlib_table, table_of_files
from decoding.speculative import Speculator, default_config
from decoding.superposed import SuperposedConfig, decode_superposed
from decoding.stopping import StopRules, resolve_mode
from models.loading import LoadedModel
from monitors.analysis import CACHE_SIZE, PROJECTS, Analysis, WaitBudget
from monitors.base import Monitor
from monitors.calls import CallMonitor
from monitors.healing import HealingMonitor
from monitors.names import MonitorStats, NameMonitor
from monitors.syntax import SyntaxMonitor, initial_state
from monitors.vocab import VocabIndex, default_cache_dir

log = logging.getLogger(__name__)

WORKSPACES = 2  # workspace n-gram tables kept (each under source_files' limits: 1000 files, 4 MB)
WORKSPACE_TTL_S = 300  # a workspace table older than this is rebuilt in the background
SAVED_FILES = 8  # tables of open files' saved copies kept
DOC_NGRAM_CHARS = 400_000  # the open document's own n-gram table is built per request up to this size
PREFILL_STEP = 256  # tokens per prefill call: ~0.5 s on 2 CPU cores, the cancellation latency


@dataclass(frozen=True)
class CompletionRequest:
    """A document, a cursor (character offset into `text`) and the settings to use."""

    text: str
    offset: int
    path: str | None = None
    workspace: str | None = None
    settings: Settings = field(default_factory=Settings)


@dataclass
class CompletionResult:
    """Ranked, distinct drafts and where the time went."""

    drafts: list[Draft]
    timings: dict[str, float]


@dataclass
class _Answered:
    """The last request that ran the model: its text around the cursor, its settings and drafts."""

    prefix: str
    suffix: str
    settings: Settings
    drafts: list[Draft]


def typed_through(last: _Answered | None, req: CompletionRequest) -> list[Draft] | None:
    """The last drafts still valid after the user typed their first characters, minus those; None if none.

    Editors ask again after every keystroke; when the new text is the old one plus a few
    characters that a draft predicted, the rest of that draft is the answer, at no cost.
    """
    if last is None or last.settings != req.settings:
        return None
    prefix = req.text[: req.offset]
    if not prefix.startswith(last.prefix) or req.text[req.offset :] != last.suffix:
        return None
    typed = prefix[len(last.prefix) :]
    if "\n" in typed or "\r" in typed:
        return None
    left = [
        Draft(d.text[len(typed) :], d.token_ids, d.logprobs, d.stop_reason, {**d.stats, "typed_through": len(typed)})
        for d in last.drafts
        if d.text.startswith(typed) and d.text[len(typed) :].strip()
    ]
    return left or None


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Engine:
    """Runs completion requests on one loaded model; thread-safe (one request at a time).

    The engine owns the backend's KV cache: use one engine per loaded model.
    """

    def __init__(self, loaded: LoadedModel, analysis: Analysis | None = None):
        self.loaded = loaded
        self.backend = loaded.backend
        self.tok = loaded.tokenizer
        self.vocab = VocabIndex(self.tok.hf, loaded.backend.config.vocab_size)
        # jedi, shared by all requests (its caches are per workspace). A caller may make it
        # before the model loads, so that jedi reads the open document meanwhile.
        self.analysis = analysis or Analysis()
        # Self-speculation's exit layer and draft length adapt across requests (None: no exit heads).
        self.spec_cfg = default_config(self.backend)
        self.exit_cfg = exit_config(self.backend)  # None: no calibrated exit heads, early exit is off
        self._ngrams: Future[NgramTable] | None = None  # the standard-library table, built on first need
        # Workspace tables (at most WORKSPACES, each rebuilt after WORKSPACE_TTL_S) and the saved
        # copies of open files (at most SAVED_FILES), for superposed decoding's n-gram model.
        self._workspace: dict[tuple[str, str], tuple[float, Future[NgramTable] | None, NgramTable | None]] = {}
        self._saved: dict[tuple[str, float], NgramTable] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="draftls-ngram")
        self.superposed_cfg = SuperposedConfig()
        self.cached: list[int] = []  # the token ids whose K/V the backend holds
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "reused_tokens": 0, "prefill_tokens": 0, "typed_through": 0}
        self.last: _Answered | None = None
        self._said_quantized = False  # logged once: speculation on quantized weights is not lossless
        self._warm_up()

    def _warm_up(self) -> None:
        """Run two tiny forward passes so that the first request does not pay torch's lazy setup."""
        ids = self.tok.encode("def f():\n    return 1\n")
        self.backend.reset(1)
        self.backend.prefill(torch.tensor([ids]))
        self.backend.step(torch.tensor([ids[:1]]))
        self.backend.reset(1)

    def _prefill(
        self, ids: list[int], reuse: bool, cancelled: Callable[[], bool] = lambda: False
    ) -> tuple[torch.Tensor | None, int]:
        """Bring the cache to `ids`, computing only what differs; logits [V] (None if cancelled) and tokens reused."""
        # The engine owns its backend's cache; if something else reset it, start over.
        stale = self.backend.length != len(self.cached)
        keep = common_prefix(self.cached, ids) if reuse and not stale else 0
        keep = min(keep, len(ids) - 1)  # the last prompt token must run to give logits
        if self.backend.batch != 1:
            self.backend.reset(1)
            keep = 0
        self.backend.truncate(keep)
        self.cached = self.cached[:keep]
        logits = None
        # In steps, so that a cancelled request stops soon; what was read stays cached for the next one.
        for i in range(keep, len(ids), PREFILL_STEP):
            chunk = ids[i : i + PREFILL_STEP]
            logits = self.backend.prefill(torch.tensor([chunk]))[0, -1]
            self.cached = list(ids[: i + len(chunk)])
            if i + len(chunk) < len(ids) and cancelled():
                return None, keep
        return logits, keep

    def complete(self, req: CompletionRequest, cancelled: Callable[[], bool] = lambda: False) -> CompletionResult:
        """Drafts for the request, best first."""
        with self.lock:
            return self._complete(req, cancelled)

    def _complete(self, req: CompletionRequest, cancelled: Callable[[], bool]) -> CompletionResult:
        s = req.settings
        if s.early_exit or (s.speculative and self.spec_cfg is not None and self.spec_cfg.max_draft > 0):
            # Once, outside the time budget: the ONNX backend loads its layer segments, and the
            # prefill below then warms them, instead of the first draft's passes. Speculation
            # runs part of the layers only once its probes show that exit-head drafts pay.
            self.backend.prepare_partial()
        t0 = time.perf_counter()
        if s.kv_reuse and (left := typed_through(self.last, req)) is not None:
            self.stats["typed_through"] += 1
            ms = (time.perf_counter() - t0) * 1000
            return CompletionResult(left, {"total_ms": ms, "prompt_ms": ms, "prefill_ms": 0.0, "decode_ms": 0.0,
                                           "prompt_tokens": 0, "reused_tokens": 0, "prefilled_tokens": 0,
                                           "generated_tokens": 0, "ms_per_token": 0.0, "typed_through": 1.0})
        prompt = build_prompt(self.tok, req.text, req.offset, s.context_tokens, self.loaded.fim, s.token_healing)
        t_prompt = time.perf_counter()
        deadline = t0 + s.time_budget_ms / 1000
        monitors, mstats = self._monitors(req, prompt, deadline)  # before prefill: jedi starts meanwhile
        logits, reused = self._prefill(prompt.ids, s.kv_reuse, cancelled)
        t_prefill = time.perf_counter()
        if logits is None:
            ms = (t_prefill - t0) * 1000
            return CompletionResult([], {"total_ms": ms, "prefill_ms": ms, "prompt_tokens": len(prompt.ids),
                                         "reused_tokens": reused, "cancelled": 1.0})
        line_prefix = prompt.prefix[prompt.prefix.rfind("\n") + 1 :]
        rules = StopRules(resolve_mode(s.mode, line_prefix), line_prefix, prompt.suffix)
        eos = set(self.tok.eos_ids)
        if self.loaded.fim is not None:
            eos |= self.loaded.fim.stop_ids(self.tok)
        # A slow cold prefill must not starve the suggestion itself: the first draft always
        # gets at least half the budget after the prompt is read.
        first = Budget(s.max_new_tokens, max(deadline, t_prefill + s.time_budget_ms / 2000), cancelled)
        for m in monitors:
            if isinstance(m, (NameMonitor, CallMonitor)):
                m.extend_deadline(first.deadline)  # jedi started with the prefill; it may use the first draft's time
        rest = Budget(s.max_new_tokens, deadline, cancelled)
        drafts: list[Draft] = []
        sampled = s.decoder == "sampling"
        speculate = s.speculative and not sampled and self.spec_cfg is not None
        if speculate and self.loaded.quantize != "none" and not self._said_quantized:
            self._said_quantized = True  # quantized activations round differently in a verify pass (README)
            log.warning("speculative decoding on %s weights is not exactly plain decoding's output; "
                        "quantize none (or auto) keeps it lossless", self.loaded.quantize)
        # Speculation is lossless and early exit is not: with both on, speculation wins.
        exiting = s.early_exit and not speculate and self.exit_cfg is not None
        uncertain = s.uncertain_threshold if s.stop_on_uncertain else 0.0
        superposed = s.decoder == "superposed" and not speculate and not exiting
        together = (not superposed and s.drafts > 1 and s.batch_drafts and not speculate and not exiting
                    and self.backend.config.sliding_window is None)

        def row(i: int) -> Drafting:
            """Draft i: greedy drafts branch at the i-th best first token; sampled ones are seeded draws."""
            return Drafting(self.vocab, [m.fork() for m in monitors], rules, prompt.heal.encode(), eos,
                            s.temperature if sampled else 0.0, s.top_p,
                            torch.Generator().manual_seed(s.seed + i) if sampled else None,
                            0 if sampled else i, uncertain)

        if superposed:
            drafts = decode_superposed(self.backend, logits, row(0), s.drafts, first, self.ngram_mix(req, prompt.ids),
                                       prompt.ids, self.superposed_cfg)
        elif together:
            drafts = decode_together(self.backend, logits, [row(i) for i in range(s.drafts)], first, row, s.drafts)
        # One after another: a draft that is blank or a copy of another is replaced by the next
        # branch (at most `drafts` times), as when decoded together.
        rows, spare, i = (0, 0, 0) if superposed or together else (s.drafts, s.drafts if s.drafts > 1 else 0, 0)
        while i < rows:
            budget = first if i == 0 else rest
            if cancelled() or (i > 0 and time.perf_counter() > deadline):
                break
            # Greedy: draft i branches at the i-th best first token. Sampling: seeded draws.
            gen = torch.Generator().manual_seed(s.seed + i) if sampled else None
            stepper: Speculator | EarlyExiter | None = None
            if speculate:
                stepper = Speculator(self.backend, self.spec_cfg, eos, prompt.ids, self.ngram_table())
            elif exiting:
                stepper = EarlyExiter(self.backend, self.exit_cfg)
            draft = decode_draft(
                self.backend, logits, self.vocab, [m.fork() for m in monitors], rules, prompt.heal.encode(), eos, budget,
                temperature=s.temperature if sampled else 0.0, top_p=s.top_p, generator=gen,
                branch=0 if sampled else i,
                stepper=stepper,
                uncertain=uncertain,
            )
            self.backend.truncate(len(prompt.ids))  # back to the prompt for the next draft
            if spare > 0 and draft.stop_reason != "uncertain" and not novel(draft.text, [d.text for d in drafts]):
                spare, rows = spare - 1, rows + 1
            drafts.append(draft)
            i += 1
        ranked = rank(drafts, greedy_first=not sampled)[: s.drafts]
        if not cancelled():  # a cancelled request's drafts may be cut short: do not serve them again
            self.last = _Answered(req.text[: req.offset], req.text[req.offset :], s, ranked)
        t_end = time.perf_counter()
        n_tokens = sum(len(d.token_ids) for d in drafts)
        decode_ms = (t_end - t_prefill) * 1000
        self.stats["requests"] += 1
        self.stats["reused_tokens"] += reused
        self.stats["prefill_tokens"] += len(prompt.ids) - reused
        timings = {
            "total_ms": (t_end - t0) * 1000,
            "prompt_ms": (t_prompt - t0) * 1000,
            "prefill_ms": (t_prefill - t_prompt) * 1000,
            "decode_ms": decode_ms,
            "prompt_tokens": len(prompt.ids),
            "reused_tokens": reused,
            "prefilled_tokens": len(prompt.ids) - reused,
            "generated_tokens": n_tokens,
            # Stopped by the cancel flag (the request went stale); else it ran to its end.
            "cancelled": float(any(d.stop_reason == "cancelled" for d in drafts) or cancelled()),
            "ms_per_token": decode_ms / n_tokens if n_tokens else 0.0,
        }
        # The steppers' counters (spec_*, exit_*), summed over the drafts.
        for key in sorted({k for d in drafts for k in d.stats if k.startswith(("spec_", "exit_"))}):
            timings[key] = sum(d.stats.get(key, 0) for d in drafts)
        if speculate:
            timings |= {"spec_layer": float(self.spec_cfg.layer), "spec_draft_len": float(self.spec_cfg.max_draft)}
        if exiting:
            steps = timings.get("exit_tokens", 0)
            timings["exit_mean_layers"] = timings.get("exit_layers", 0) / steps if steps else 0.0
        if mstats is not None:
            timings |= {"monitor_ms": mstats.ms, "monitor_triggers": mstats.triggers,
                        "monitor_constrained": mstats.constrained, "monitor_stepped_aside": mstats.stepped_aside}
        return CompletionResult(ranked, timings)

    def sizes(self, s: Settings) -> dict[str, list[int]]:
        """[current, limit] of everything the engine keeps between requests, under settings `s`
        (the load test checks them)."""
        cap = getattr(getattr(self.backend, "cache", None), "capacity", self.backend.length)
        # The cache holds one prompt (the prefix window, the FIM suffix's quarter of it and the
        # template) and the drafts after it (plus a speculation's guesses); it grows by doubling.
        most = s.context_tokens * 5 // 4 + s.drafts * s.max_new_tokens + 64
        return {"kvTokens": [self.backend.length, most], "kvCapacity": [cap, 2 * most],
                "analysisCache": [self.analysis.cache_size, CACHE_SIZE],
                "analysisProjects": [self.analysis.project_count, PROJECTS],
                "workspaceTables": [len(self._workspace), WORKSPACES], "savedTables": [len(self._saved), SAVED_FILES]}

    def ngram_table(self, wait: bool = False) -> NgramTable | None:
        """The standard-library n-gram table; the first call starts building it in the background
        (a few seconds, then cached on disk) and requests draft without it until it is ready."""
        if self._ngrams is None:
            cache = default_cache_dir()
            self._ngrams = self._pool.submit(stdlib_table, self._encode, self.backend.config.vocab_size,
                                             self.tok.hf.to_str(), cache.parent if cache is not None else None)
        if not wait and not self._ngrams.done():
            return None
        try:
            return self._ngrams.result()
        except Exception:
            log.exception("the n-gram table could not be built; speculation drafts without it")
            return None

    def ngram_mix(self, req: CompletionRequest, ids: list[int]) -> NgramMix:
        """The n-gram model of one request: the open document as it is in the editor (built on
        the request path: ~40 ms for 1200 lines, 17k tokens; past DOC_NGRAM_CHARS, the prompt's tokens only),
        the workspace without the open file's saved copy, and the standard library, once ready."""
        vocab = self.backend.config.vocab_size
        doc = self._encode([req.text])[0] if len(req.text) <= DOC_NGRAM_CHARS else ids
        sources: list[tuple[NgramTable | Without, float]] = [(NgramTable.build(np.asarray(doc), vocab), 0.5)]
        if req.workspace:
            root = Path(req.workspace)
            path = Path(req.path) if req.path else None
            ws = self.workspace_table(root, path)
            if ws is not None:
                saved = self._saved_table(path) if path is not None and path.is_relative_to(root) else None
                sources.append((Without(ws, saved) if saved is not None else ws, 0.3))
        std = self.ngram_table()
        if std is not None:
            sources.append((std, 0.2))
        return NgramMix(sources)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.hf.encode_batch(texts, add_special_tokens=False)]

    def workspace_table(self, root: Path, near: Path | None) -> NgramTable | None:
        """The table of a workspace's Python files (source_files' limits), built in the background
        and rebuilt after WORKSPACE_TTL_S; the previous one serves meanwhile, None before the first."""
        top = near.relative_to(root).parts[0] if near is not None and near.is_relative_to(root) else ""
        key = (str(root), top)
        started, job, previous = self._workspace.get(key, (0.0, None, None))
        if job is not None and job.done():
            try:
                previous = job.result()
            except Exception:
                log.exception("the workspace n-gram table could not be built")
        if job is None or (job.done() and time.monotonic() - started > WORKSPACE_TTL_S):
            vocab = self.backend.config.vocab_size
            job = self._pool.submit(lambda: table_of_files(source_files(root, near), self._encode, vocab))
            started = time.monotonic()
        self._workspace.pop(key, None)
        self._workspace[key] = (started, job, previous)  # the newest last
        while len(self._workspace) > WORKSPACES:
            self._workspace.pop(next(iter(self._workspace)))
        return previous

    def _saved_table(self, path: Path) -> NgramTable | None:
        """The table of one file as saved on disk (cached by modification time)."""
        try:
            key = (str(path), path.stat().st_mtime)
        except OSError:
            return None
        if key not in self._saved:
            self._saved[key] = table_of_files([path], self._encode, self.backend.config.vocab_size)
            while len(self._saved) > SAVED_FILES:
                self._saved.pop(next(iter(self._saved)))
        return self._saved[key]

    def _monitors(self, req: CompletionRequest, prompt: Prompt, deadline: float) -> tuple[list[Monitor], MonitorStats | None]:
        """The monitors of one request (each draft gets forks): healing, and with `monitors` on,
        syntax, names and calls."""
        monitors: list[Monitor] = [HealingMonitor(self.vocab, prompt.heal.encode())]
        if not req.settings.monitors:
            return monitors, None
        # jedi may hold up a request's drafts for at most 40% of its time budget, all queries together.
        stats = MonitorStats(wait=WaitBudget(0.4 * req.settings.time_budget_ms / 1000))
        before = prompt.prefix[: len(prompt.prefix) - len(prompt.heal)]  # generation re-types the healed text
        try:
            t0 = time.perf_counter()
            lex = initial_state(before)
            syntax = SyntaxMonitor(self.vocab, lex)
            stats.ms += (time.perf_counter() - t0) * 1000
            names = NameMonitor(self.vocab, self.analysis, before, prompt.suffix, req.path, req.workspace,
                                deadline, stats, lex=lex, heal=prompt.heal, affinity=req.settings.name_affinity)
            calls = CallMonitor(self.vocab, self.analysis, before, prompt.suffix, req.path, req.workspace,
                                deadline, stats, lex=lex)
            monitors += [syntax, names, calls]
        except Exception:  # analysis must never cost the suggestion itself
            log.exception("monitors unavailable for this request")
        return monitors, stats

    def prompt_for(self, req: CompletionRequest) -> Prompt:
        """The prompt a request would use (for inspection and tests)."""
        return build_prompt(self.tok, req.text, req.offset, req.settings.context_tokens, self.loaded.fim)


def rank(drafts: list[Draft], greedy_first: bool = True) -> list[Draft]:
    """Distinct non-empty drafts by score; the greedy draft, if any, leads."""
    seen: set[str] = set()
    out: list[Draft] = []
    head = drafts[:1] if greedy_first else []
    for d in head + sorted(drafts[len(head) :], key=lambda d: d.score, reverse=True):
        if d.text.strip() and d.text not in seen:
            seen.add(d.text)
            out.append(d)
    return out
