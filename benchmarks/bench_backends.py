"""torch against ONNX Runtime (float32, int8, int4) and llama.cpp, in one run on one machine.

    .venv/bin/python benchmarks/bench_backends.py [--repeats 3] [--llamacpp-python /tmp/llamacpp-venv/bin/python]
    .venv/bin/python benchmarks/bench_backends.py --device cuda   # torch and onnxruntime-gpu on a CUDA GPU

Measures, on the same prompts (real code: the standard library's `argparse.py`):
- the machine's weight-read floor: bytes of weights one decoded token reads (every layer's
  matrices and the LM head, in the backend's format) over the measured memory read
  bandwidth (a 2-thread sum over a 1 GiB buffer);
- decode ms/token (64 greedy tokens after a 512-token prompt) and prefill tokens/s (512);
- whether greedy tokens equal torch's;
- the latency of an engine request (one line, 1 draft) after a one-character edit in a
  ~2,000-token file, as in bench_core.py;
- ONNX Runtime float32 with the plain attention operators of the CUDA graphs, against the
  CPU's GroupQueryAttention;
- llama.cpp (llama-cpp-python in its own venv, see llamacpp_worker.py) on the shipped GGUF
  with the same threads, in the same rounds as the others, when --llamacpp-python is given.
With --device cuda: torch on the CPU (the reference tokens), torch on the GPU (its steps
replayed as CUDA graphs, and eager), and ONNX Runtime's CUDA provider in float32 (KV cache on
the GPU by I/O binding, and copied from the host each call, to show what the binding saves)
and int4; the floor is then the GPU's.
Configurations run interleaved, round by round, so that the machine's drift hits all alike.
Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_core import code_ids, machine  # noqa: E402
from decoding.engine import CompletionRequest, Engine  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from models import threads as torch_threads  # noqa: E402
from models.loading import LoadedModel, load_model, to_onnx  # noqa: E402

LLAMA_SNIPPET = r"""
import json, sys, time
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=2048, n_threads=int(sys.argv[2]), verbose=False)
ids = json.loads(sys.argv[3]); n = int(sys.argv[4]); out = {"decode": [], "prefill": []}
for _ in range(int(sys.argv[5])):
    llm.reset(); t = time.perf_counter(); llm.eval(ids); out["prefill"].append(time.perf_counter() - t)
    tok = []; t = time.perf_counter()
    for i, x in enumerate(llm.generate(ids, top_k=1, temp=0.0, reset=True)):
        if i == 0: t = time.perf_counter()  # the first token needs the prompt: not decode
        tok.append(x)
        if len(tok) == n + 1: break
    out["decode"].append((time.perf_counter() - t) / n)
out["tokens"] = tok[:n]
print(json.dumps(out))
"""


def bandwidth_gbs(gib: float = 1.0, repeats: int = 5, device: str = "cpu") -> float:
    """Memory read bandwidth: a sum over a buffer far larger than the caches, on all the
    threads the backends use (torch keeps one beside ONNX Runtime, models/threads.py)."""
    was = torch.get_num_threads()
    torch.set_num_threads(torch_threads.configured())
    try:
        x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32, device=device)
        x.sum().item()
        best = min(_timed(lambda: x.sum().item()) for _ in range(repeats))
    finally:
        torch.set_num_threads(was)
    return x.numel() * 4 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def weight_bytes(loaded: LoadedModel, bits: float, head_bits: float | None = None) -> float:
    """Bytes of weights one decoded token reads: every matrix of every layer (`bits` a weight)
    and the LM head (`head_bits`, by default the same)."""
    c = loaded.backend.config
    per_layer = (c.hidden_size * c.head_dim * (c.num_heads * 2 + c.num_kv_heads * 2)
                 + 3 * c.hidden_size * c.intermediate_size)
    head = c.vocab_size * c.hidden_size * (bits if head_bits is None else head_bits)
    return (per_layer * c.num_layers * bits + head) / 8


def decode_run(loaded: LoadedModel, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """(prefill s, decode s/token, tokens) for greedy decoding of n tokens."""
    b = loaded.backend
    b.reset()
    t = time.perf_counter()
    logits = b.prefill(torch.tensor([prompt]))[0, -1]
    pre = time.perf_counter() - t
    out = []
    t = time.perf_counter()
    for _ in range(n):
        tok = int(logits.argmax())
        out.append(tok)
        logits = b.step(torch.tensor([[tok]]))[0, -1]
    return pre, (time.perf_counter() - t) / n, out


def edit_request_ms(engine: Engine, text: str, i: int) -> float:
    """A one-line request after a one-character edit (the request before it primes the cache)."""
    s = Settings.from_dict({"drafts": 1, "maxNewTokens": 16, "mode": "line", "contextTokens": 4096,
                            "timeBudgetMs": 600_000})[0]
    doc = text + "ab"[i % 2]
    engine.complete(CompletionRequest(doc, len(doc), settings=s))
    edited = doc + "x"
    return engine.complete(CompletionRequest(edited, len(edited), settings=s)).timings["total_ms"]


def cuda_configs(cpu_model: LoadedModel) -> dict[str, LoadedModel]:
    """torch and ONNX Runtime on the GPU: torch with its steps replayed as CUDA graphs, and
    eager; ONNX Runtime float32 with the cache bound on the GPU and, for comparison, copied
    from the host each call; int4 (MatMulNBits)."""
    from models.onnx_backend import OnnxBackend

    eager = load_model(device="cuda")
    eager.backend.cuda_graphs = False  # type: ignore[attr-defined]
    out = {"torch float32, CUDA, steps as CUDA graphs": load_model(device="cuda"), "torch float32, CUDA, eager": eager}
    bound = to_onnx(cpu_model, "cuda", "none")
    assert isinstance(bound.backend, OnnxBackend) and bound.backend.bound, "no CUDA provider, or torch without CUDA"
    out["ONNX Runtime float32, CUDA"] = bound
    out["ONNX Runtime float32, CUDA, cache copied from the host"] = to_onnx(cpu_model, "cuda", "none", bind=False)
    out["ONNX Runtime int4, CUDA"] = to_onnx(cpu_model, "cuda", "int4")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--llamacpp-python", help="a Python with llama-cpp-python, for the llama.cpp row")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    torch_model = load_model()
    ref_name = "torch float32" + (", CPU" if args.device == "cuda" else "")
    configs: dict[str, LoadedModel] = {ref_name: torch_model}
    if args.device == "cuda":
        configs |= cuda_configs(torch_model)
    else:
        for q in ("none", "int8", "int4"):
            configs[f"ONNX Runtime {'float32' if q == 'none' else q}"] = to_onnx(torch_model, "cpu", q)
        # The attention of the CUDA graphs (plain operators, the CPU's before GroupQueryAttention).
        configs["ONNX Runtime float32, plain attention"] = to_onnx(torch_model, "cpu", "none", attention="plain")
    # Bits a weight read, layers and LM head (models/quantize.py; scales are float32): Q8_0 is 8 + 1
    # (a scale a block of 32); Q4_1 is 4 + 1 + 1 (a scale and the block minimum's term).
    bits = {name: (9, 9) if "int8" in name else (6, 9) if "int4" in name else (32, 32) for name in configs}
    prompt = code_ids(torch_model.tokenizer, 512)
    import argparse as ap

    text, lines = "", Path(ap.__file__).read_text().splitlines(keepends=True)
    while len(torch_model.tokenizer.encode(text)) < 2000:
        text += lines.pop(0)
    text += "    parser = "
    engines = {name: Engine(m) for name, m in configs.items()}
    res: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": [], "edit": []} for name in configs}
    tokens: dict[str, list[int]] = {}
    llama: dict[str, list] | None = {"decode": [], "prefill": []} if args.llamacpp_python else None
    for r in range(args.repeats):
        for name, m in configs.items():
            pre, dec, toks = decode_run(m, prompt, args.tokens)
            res[name]["prefill"].append(len(prompt) / pre)
            res[name]["decode"].append(dec * 1000)
            tokens[name] = toks
            res[name]["edit"].append(edit_request_ms(engines[name], text, r))
        if llama is not None:
            # llama.cpp in the same rounds (a process each: it loads in a fraction of a second), so
            # the machine's drift hits it as it hits the others.
            out = subprocess.run([args.llamacpp_python, "-c", LLAMA_SNIPPET, str(torch_model.spec.location),
                                  str(torch.get_num_threads()), json.dumps(prompt), str(args.tokens), "1"],
                                 capture_output=True, text=True, check=True)
            one = json.loads(out.stdout.strip().splitlines()[-1])
            llama["decode"] += one["decode"]
            llama["prefill"] += one["prefill"]
            llama["tokens"] = one["tokens"]
    gbs = bandwidth_gbs(device=args.device)
    ref = tokens[ref_name]
    today = datetime.date.today().isoformat()
    lc = f" --llamacpp-python {args.llamacpp_python}" if args.llamacpp_python else ""
    dev = " --device cuda" if args.device == "cuda" else ""
    print(f"Command: `.venv/bin/python benchmarks/bench_backends.py --repeats {args.repeats}{lc}{dev}`  ")
    import onnxruntime

    print(f"Machine: {machine()}, onnxruntime {onnxruntime.__version__}. Date: {today}. "
          f"Memory read bandwidth ({args.device}): {gbs:.1f} GB/s.  ")
    print(f"Prompt: {len(prompt)} tokens of `argparse.py`; decode: {args.tokens} greedy tokens; medians of "
          f"{args.repeats} interleaved rounds. Edit request: one line after a one-character edit in a "
          f"~2,000-token file (engine, KV reuse).\n")
    print("| backend | weights read per token | floor ms/token | decode ms/token | x floor | prefill tok/s "
          "| greedy tokens = torch | edit request ms | edit vs torch |")
    print("|---|---|---|---|---|---|---|---|---|")
    torch_edit = statistics.median(res[ref_name]["edit"])
    for name in configs:
        wb = weight_bytes(torch_model, *bits[name])
        floor = wb / (gbs * 1e9) * 1000
        dec = statistics.median(res[name]["decode"])
        edit = statistics.median(res[name]["edit"])
        same = "yes" if tokens[name] == ref else f"{sum(a == b for a, b in zip(tokens[name], ref))}/{len(ref)}"
        print(f"| {name} | {wb / 1e6:.0f} MB | {floor:.1f} | {dec:.1f} | {dec / floor:.2f} | "
              f"{statistics.median(res[name]['prefill']):.0f} | {same} | {edit:.0f} | {torch_edit / edit:.2f}x |")
    if llama is not None:
        dec = statistics.median(llama["decode"]) * 1000
        same = f"{sum(a == b for a, b in zip(llama['tokens'], ref))}/{len(ref)}"
        print(f"| llama.cpp, same GGUF (Q4_1) | - | - | {dec:.1f} | - | "
              f"{len(prompt) / statistics.median(llama['prefill']):.0f} | {same} | - | - |")


if __name__ == "__main__":
    main()
