"""Core speed of draftls against plain transformers, in one run on one machine.

Measures: model load time (cold = dequantize the GGUF, cached = safetensors), prefill
tokens/s at 512 and 2048 tokens, decode ms/token, and the latency of a repeated request
after a one-character edit in a 2,000-token file, with and without KV reuse.

    .venv/bin/python benchmarks/bench_core.py [--repeats 3] [--skip-cold]

Prints a Markdown section for BENCHMARKS.md. Prompts are real code: the Python standard
library's `argparse.py` (the same text for every configuration).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding.engine import CompletionRequest, Engine  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from models import threads as torch_threads  # noqa: E402
from models.loading import load_model  # noqa: E402
from models.onnx_backend import fast_int8  # noqa: E402

LOAD_SNIPPET = (
    "import time; t0 = time.perf_counter(); from models.loading import load_model; t1 = time.perf_counter(); "
    "m = load_model(); print(time.perf_counter() - t1, t1 - t0, m.source)"
)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if fast_int8():  # what `quantize: auto` runs depends on it
        cpu += ", AVX-512 VNNI"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__} "
            f"({torch_threads.configured()} threads), Python {platform.python_version()}")


def load_times() -> dict[str, float]:
    """Cold and cached load in fresh processes with a private, empty cache directory."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache, "PYTHONPATH": str(ROOT)}
        for label in ("cold", "cached"):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", LOAD_SNIPPET], env=env, capture_output=True, text=True,
                               check=True)
            wall = time.perf_counter() - t
            seconds, imports, source = r.stdout.split()
            out[f"{label}_load_s"] = float(seconds)
            out[f"{label}_import_s"] = float(imports)
            out[f"{label}_process_s"] = wall
            out[f"{label}_source"] = source  # type: ignore[assignment]
    return out


def code_ids(tok, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    import argparse as ap

    ids = tok.encode(Path(ap.__file__).read_text())
    return ids[:n]


def median_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prefill_and_decode(loaded, hf, repeats: int, new_tokens: int = 64) -> dict[str, float]:  # type: ignore[no-untyped-def]
    b = loaded.backend
    res: dict[str, float] = {}
    for n in (512, 2048):
        ids = torch.tensor([code_ids(loaded.tokenizer, n)])

        def ours() -> None:
            b.reset()
            b.prefill(ids)

        def theirs() -> None:
            with torch.inference_mode():
                hf(ids, use_cache=True, logits_to_keep=1)

        res[f"ours_prefill_{n}_tok_s"] = n / median_time(ours, repeats)
        res[f"hf_prefill_{n}_tok_s"] = n / median_time(theirs, repeats)

    prompt = torch.tensor([code_ids(loaded.tokenizer, 512)])

    def ours_decode() -> list[int]:
        b.reset()
        logits = b.prefill(prompt)[0, -1]
        out = []
        t = time.perf_counter()
        for _ in range(new_tokens):
            tok = int(logits.argmax())
            out.append(tok)
            logits = b.step(torch.tensor([[tok]]))[0, -1]
        res.setdefault("_ours_decode", []).append((time.perf_counter() - t) / new_tokens)  # type: ignore[union-attr]
        return out

    def hf_generate() -> list[int]:
        with torch.inference_mode():
            t = time.perf_counter()
            hf(prompt, use_cache=True, logits_to_keep=1)
            pre = time.perf_counter() - t
            t = time.perf_counter()
            out = hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            total = time.perf_counter() - t
        res.setdefault("_hf_decode", []).append((total - pre) / new_tokens)  # type: ignore[union-attr]
        return out[0, prompt.shape[1] :].tolist()

    same = True
    for _ in range(repeats):  # interleaved, so both see the same machine load
        a, h = ours_decode(), hf_generate()
        same = same and a[:32] == h[:32]
    res["ours_decode_ms_token"] = statistics.median(res.pop("_ours_decode")) * 1000  # type: ignore[arg-type]
    res["hf_decode_ms_token"] = statistics.median(res.pop("_hf_decode")) * 1000  # type: ignore[arg-type]
    res["greedy_tokens_match_hf"] = same  # type: ignore[assignment]
    return res


def edit_latency(loaded, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """A request after a one-character edit at the cursor of a ~2,000-token file."""
    tok = loaded.tokenizer
    import argparse as ap

    lines = Path(ap.__file__).read_text().splitlines(keepends=True)
    text, n = "", 0
    for line in lines:
        if n >= 2000:
            break
        text += line
        n = len(tok.encode(text))
    text += "    parser = "
    res: dict[str, float] = {"file_tokens": len(tok.encode(text))}
    for label, new_tokens in (("ttft", 1), ("line16", 16)):
        base = {"drafts": 1, "maxNewTokens": new_tokens, "mode": "line", "contextTokens": 4096,
                "timeBudgetMs": 600_000}
        warm_s = Settings.from_dict(base)[0]
        cold_s = Settings.from_dict({**base, "kvReuse": False})[0]
        warm, cold = [], []
        engine = Engine(loaded)
        for i in range(repeats):
            doc = text + "ab"[i % 2]  # alternate edits so each request really differs
            engine.complete(CompletionRequest(doc, len(doc), settings=warm_s))  # the request before the edit
            edited = doc + "x"
            r = engine.complete(CompletionRequest(edited, len(edited), settings=warm_s))
            warm.append(r.timings["total_ms"])
            res["reused_tokens"] = r.timings["reused_tokens"]
            res["prompt_tokens"] = r.timings["prompt_tokens"]
            c = engine.complete(CompletionRequest(edited, len(edited), settings=cold_s))
            cold.append(c.timings["total_ms"])
            res[f"{label}_generated"] = c.timings["generated_tokens"]
        res[f"{label}_warm_ms"] = statistics.median(warm)
        res[f"{label}_cold_ms"] = statistics.median(cold)
        res[f"{label}_ratio"] = res[f"{label}_warm_ms"] / res[f"{label}_cold_ms"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-cold", action="store_true", help="skip the ~20 s cold load")
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = p.parse_args()
    from transformers import AutoModelForCausalLM

    res: dict[str, object] = {} if args.skip_cold else dict(load_times())
    loaded = load_model()
    hf = AutoModelForCausalLM.from_pretrained(loaded.info["dir"], dtype=torch.float32).eval()
    Engine(loaded)  # warm-up of both stacks before timing
    with torch.inference_mode():
        hf(torch.tensor([code_ids(loaded.tokenizer, 64)]))
    res.update(prefill_and_decode(loaded, hf, args.repeats))
    res.update(edit_latency(loaded, args.repeats))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    r = res
    today = datetime.date.today().isoformat()
    print(f"Command: `.venv/bin/python benchmarks/bench_core.py --repeats {args.repeats}`  ")
    print(f"Machine: {machine()}  ")
    print(f"Date: {today}. Model: SmolLM2-135M, float32, CPU. Medians of {args.repeats} runs.\n")
    if "cold_load_s" in r:
        print("| load | load_model() | importing torch and draftls | whole process |")
        print("|---|---|---|---|")
        for label, what in (("cold", "cold (dequantize the GGUF)"), ("cached", "cached (safetensors)")):
            print(f"| {what} | {r[f'{label}_load_s']:.2f} s | {r[f'{label}_import_s']:.2f} s | "
                  f"{r[f'{label}_process_s']:.1f} s |")
        print()
    print("| measure | draftls (torch backend) | transformers | draftls / transformers |")
    print("|---|---|---|---|")
    for n in (512, 2048):
        o, h = r[f"ours_prefill_{n}_tok_s"], r[f"hf_prefill_{n}_tok_s"]
        print(f"| prefill {n} tokens, tokens/s | {o:.0f} | {h:.0f} | {o / h:.2f} |")  # type: ignore[operator]
    o, h = r["ours_decode_ms_token"], r["hf_decode_ms_token"]
    print(f"| decode after 512 tokens, ms/token (`generate`, greedy) | {o:.1f} | {h:.1f} | {o / h:.2f} |")  # type: ignore[operator]
    print(f"\nGreedy tokens identical to transformers.generate (first 32): {r['greedy_tokens_match_hf']}.\n")
    print(f"One-character edit at the cursor of a {r['file_tokens']}-token file "
          f"(prompt {r['prompt_tokens']} tokens, {r['reused_tokens']} reused with KV reuse):\n")
    print("| request | with KV reuse | without (cold prefill) | ratio |")
    print("|---|---|---|---|")
    print(f"| first token only (time to first token) | {r['ttft_warm_ms']:.0f} ms | {r['ttft_cold_ms']:.0f} ms | "
          f"{r['ttft_ratio']:.3f} |")
    print(f"| line completion, up to 16 tokens ({r['line16_generated']} generated) | {r['line16_warm_ms']:.0f} ms | "
          f"{r['line16_cold_ms']:.0f} ms | {r['line16_ratio']:.3f} |")


if __name__ == "__main__":
    main()
