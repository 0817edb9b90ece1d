"""Quality and speed of named configurations on the dev set, side by side in one run.

    .venv/bin/python benchmarks/run_devset.py [--configs hf-generate,greedy,greedy-3] [--limit N]
        [--cases benchmarks/devset.jsonl] [--settings JSON] [--write BENCHMARKS.md]

Every configuration sees the same cases in the same order. `hf-generate` is the plain
baseline: the same prefix window, tokenized as it is (no token healing), greedy
`transformers.generate` until the end of the line. The draftls rows run the engine of
`draftls batch`. With --write, the table replaces the dev-set section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import machine  # noqa: E402
from decoding.engine import CompletionRequest, CompletionResult, Engine  # noqa: E402
from decoding.prompt import prefix_window  # noqa: E402
from decoding.sampling import Draft  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from lsp.batch import Case, format_summary, load_cases, run_batch  # noqa: E402
from models.loading import LoadedModel, load_model, resolve_backend, to_onnx  # noqa: E402

START, END = "<!-- devset:start -->", "<!-- devset:end -->"

# name -> (description, settings in wire names); "hf-generate" is handled apart.
CONFIGS: dict[str, tuple[str, dict[str, object]]] = {
    "hf-generate": ("transformers.generate, greedy, plain prompt (baseline)", {"drafts": 1}),
    "greedy": ("draftls greedy, 1 draft", {"drafts": 1}),
    "greedy-no-heal": ("draftls greedy, 1 draft, no token healing", {"drafts": 1, "tokenHealing": False}),
    "greedy-3": ("draftls greedy, 3 drafts (branching), decoded together", {"drafts": 3}),
    "greedy-3-seq": ("draftls greedy, 3 drafts (branching), one after another", {"drafts": 3, "batchDrafts": False}),
    "greedy-no-monitors": ("draftls greedy, 1 draft, monitors off", {"drafts": 1, "monitors": False}),
    "greedy-no-affinity": ("draftls greedy, 1 draft, no name-affinity bonus", {"drafts": 1, "nameAffinity": 0}),
    **{f"greedy-affinity-{b}": (f"draftls greedy, 1 draft, name-affinity bonus {b}", {"drafts": 1, "nameAffinity": b})
       for b in (2, 3, 4, 6, 8)},
    "greedy-3-no-monitors": ("draftls greedy, 3 drafts, monitors off", {"drafts": 3, "monitors": False}),
    "sampling-3": ("draftls sampling, 3 drafts, decoded together", {"drafts": 3, "decoder": "sampling"}),
    "superposed-3": ("draftls superposed decoding, 3 drafts", {"drafts": 3, "decoder": "superposed"}),
    "greedy-spec": ("draftls greedy, 1 draft, self-speculative", {"drafts": 1, "speculative": True}),
    "greedy-stop": ("draftls greedy, 1 draft, stop-on-uncertain", {"drafts": 1, "stopOnUncertain": True}),
    "greedy-exit": ("draftls greedy, 1 draft, dynamic early exit", {"drafts": 1, "earlyExit": True}),
    "greedy-spec-stop": ("draftls greedy, 1 draft, self-speculative + stop-on-uncertain",
                         {"drafts": 1, "speculative": True, "stopOnUncertain": True}),
    "onnx": ("draftls greedy, 1 draft, ONNX Runtime float32", {"drafts": 1, "backend": "onnx", "quantize": "none"}),
    "onnx-3": ("draftls greedy, 3 drafts decoded together, ONNX Runtime float32",
               {"drafts": 3, "backend": "onnx", "quantize": "none"}),
    "onnx-int8": ("draftls greedy, 1 draft, ONNX Runtime int8", {"drafts": 1, "backend": "onnx", "quantize": "int8"}),
    "onnx-int4": ("draftls greedy, 1 draft, ONNX Runtime int4", {"drafts": 1, "backend": "onnx", "quantize": "int4"}),
    "llama-cpp": ("llama.cpp (llama-cpp-python 0.3.36) on the same GGUF, greedy, plain prompt", {"drafts": 1}),
}


def default_weights() -> str:
    """What `quantize: auto` runs on this machine's CPU (models.onnx_backend.quantize_for)."""
    from models.onnx_backend import quantize_for

    return "int8" if resolve_backend("auto") == "onnx" and quantize_for("auto", "cpu") == "int8" else "float32"


def first_of_each_kind(cases: list[Case], limit: int | None) -> list[Case]:
    """The first `limit` cases of each kind (all without a limit), those of one file next to
    each other: what an editor session looks like to the KV cache."""
    taken: dict[str, int] = {}
    kept = []
    for c in cases:
        taken[c.kind] = taken.get(c.kind, 0) + 1
        if not limit or taken[c.kind] <= limit:
            kept.append(c)
    return sorted(kept, key=lambda c: (c.file, c.line))


def llamacpp_completer(
    loaded: LoadedModel, settings: Settings, python: str, gguf: str
) -> Callable[[CompletionRequest], CompletionResult]:
    """llama.cpp in a worker process (its own venv), fed the same prompt token ids as hf-generate."""
    import subprocess

    worker = subprocess.Popen(
        [python, str(ROOT / "benchmarks" / "llamacpp_worker.py"), gguf, str(torch.get_num_threads())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert worker.stdout is not None and worker.stdin is not None
    json.loads(worker.stdout.readline())  # ready

    def complete(req: CompletionRequest) -> CompletionResult:
        t0 = time.perf_counter()
        ids = plain_prompt(loaded, req, settings)
        worker.stdin.write(json.dumps({"ids": ids, "max_tokens": settings.max_new_tokens}) + "\n")
        worker.stdin.flush()
        ans = json.loads(worker.stdout.readline())
        end = time.perf_counter()
        text = ans["text"].split("\n", 1)[0].rstrip()
        drafts = [Draft(text, ans["ids"], [])] if text.strip() else []
        first = end - (ans["ms"] - ans["first_ms"]) / 1000
        return CompletionResult(drafts, baseline_timings(t0, first, end, len(ans["ids"])))

    return complete


def baseline_timings(t0: float, first: float, end: float, n: int) -> dict[str, float]:
    """Timings of a baseline; decoding counts from its first token, as the engine's does."""
    return {"total_ms": (end - t0) * 1000, "decode_ms": (end - first) * 1000, "generated_tokens": max(n - 1, 0)}


def plain_prompt(loaded: LoadedModel, req: CompletionRequest, settings: Settings) -> list[int]:
    """The prefix window tokenized as it is: what a plain client sends (no healing, no FIM)."""
    tok = loaded.tokenizer
    start, ids, _ = prefix_window(tok, req.text[: req.offset], settings.context_tokens)
    return ([tok.doc_start_id] if start == 0 and tok.doc_start_id is not None else []) + ids


def hf_completer(loaded: LoadedModel, settings: Settings) -> Callable[[CompletionRequest], CompletionResult]:
    """Plain transformers: the prefix window as it is, greedy generate until a newline."""
    from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList

    hf = AutoModelForCausalLM.from_pretrained(loaded.info["dir"], dtype=torch.float32).eval()
    tok = loaded.tokenizer

    class Newline(StoppingCriteria):
        def __init__(self, start: int):
            self.start = start

            self.first: float | None = None  # when the first token was out: prefill ends there

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: object) -> torch.Tensor:
            self.first = self.first or time.perf_counter()
            done = "\n" in tok.decode(input_ids[0, self.start :].tolist())
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

    def complete(req: CompletionRequest) -> CompletionResult:
        t0 = time.perf_counter()
        ids = plain_prompt(loaded, req, settings)
        prompt = torch.tensor([ids])
        stop = Newline(len(ids))
        with torch.inference_mode():
            out = hf.generate(prompt, max_new_tokens=settings.max_new_tokens, do_sample=False,
                              stopping_criteria=StoppingCriteriaList([stop]),
                              pad_token_id=min(tok.eos_ids), eos_token_id=sorted(tok.eos_ids))
        end = time.perf_counter()
        new = out[0, len(ids) :].tolist()
        text = tok.decode(new).split("\n", 1)[0].rstrip()
        drafts = [Draft(text, new, [])] if text.strip() else []
        return CompletionResult(drafts, baseline_timings(t0, stop.first or end, end, len(new)))

    return complete


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, default=ROOT / "benchmarks" / "devset.jsonl")
    p.add_argument("--workspace", type=Path, default=ROOT / "benchmarks" / "workspace")
    p.add_argument("--configs", default="hf-generate,greedy,greedy-no-heal,greedy-3")
    p.add_argument("--limit", type=int, help="first N cases of each kind")
    p.add_argument("--kinds", default="deref,line", help="which kinds of cases to run")
    p.add_argument("--model", default=None)
    p.add_argument("--out", type=Path, help="folder for per-configuration results JSONL")
    p.add_argument("--write", type=Path, help="replace the dev-set section of this Markdown file")
    p.add_argument("--llamacpp-python", help="a Python with llama-cpp-python, for the llama-cpp row")
    p.add_argument("--settings", type=json.loads, default={},
                   help='settings (wire names) for every row, e.g. \'{"timeBudgetMs": 60000}\' to compare '
                        "quality without the time budget cutting drafts")
    args = p.parse_args()

    cases, errors = load_cases(args.cases.read_text(encoding="utf-8").splitlines())
    if errors:
        print(f"{len(errors)} bad cases skipped: {errors[:3]}", file=sys.stderr)
    kinds = {k.strip() for k in args.kinds.split(",")}
    cases = [c for c in cases if c.kind in kinds]
    cases = first_of_each_kind(cases, args.limit)
    loaded = load_model(args.model)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    rows: list[str] = []
    raw: dict[str, object] = {}
    for name in names:
        desc, wire = CONFIGS[name]
        settings = Settings.from_dict({"model": loaded.spec.name, **wire, **args.settings})[0]
        backend = resolve_backend(settings.backend)
        model = loaded if backend == "torch" else to_onnx(loaded, "cpu", settings.load_quantize, print)
        engine = Engine(model)  # a fresh cache per configuration
        complete = None
        if name == "hf-generate":
            complete = hf_completer(loaded, settings)
        elif name == "llama-cpp":
            if not args.llamacpp_python:
                raise SystemExit("the llama-cpp row needs --llamacpp-python (see benchmarks/llamacpp_worker.py)")
            complete = llamacpp_completer(loaded, settings, args.llamacpp_python, loaded.spec.location)
        out = None
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            out = open(args.out / f"{name}.jsonl", "w", encoding="utf-8")
        t = time.perf_counter()
        summary = run_batch(engine, cases, settings, args.workspace.resolve(), out, sys.stderr.isatty(), complete)
        if out:
            out.close()
        print(f"{name}: {time.perf_counter() - t:.0f} s; jedi: {json.dumps(engine.analysis.stats.as_dict())}",
              file=sys.stderr)
        raw[name] = summary
        table = format_summary(summary).splitlines()
        if not rows:
            rows = ["| config " + table[0], "|---" + table[1]]
        rows += [f"| {name}: {desc} " + line for line in table[2:]]
    limit = f" --limit {args.limit}" if args.limit else ""
    if args.settings:
        limit += f" --settings '{json.dumps(args.settings)}'"
    if "llama-cpp" in names:
        limit += " --llamacpp-python /tmp/llamacpp-venv/bin/python"  # see llamacpp_worker.py
    section = "\n".join([
        START,
        f"Command: `.venv/bin/python benchmarks/run_devset.py --configs {','.join(names)}{limit}`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}. Model: {loaded.spec.name}, CPU, backend "
        f"{resolve_backend('auto')} (the default `auto`), weights {default_weights()} (the default `quantize: auto` "
        "here) unless the row says otherwise. "
        f"{len(cases)} cases from `{args.cases.name}`; default settings unless the row says otherwise.",
        "",
        *rows,
        END,
    ])
    print(section)
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(raw, indent=1))
    if args.write:
        doc = args.write.read_text()
        if START in doc and END in doc:
            doc = doc[: doc.index(START)] + section + doc[doc.index(END) + len(END) :]
        else:
            doc = doc.rstrip() + "\n\n## Dev-set quality and latency (issue 3)\n\n" + section + "\n"
        args.write.write_text(doc)


if __name__ == "__main__":
    main()
