"""Self-speculative decoding against plain greedy: ms per generated token, and identical output.

    .venv/bin/python benchmarks/bench_speculative.py [--cases 40] [--tokens 32] [--monitors] [--backend torch|onnx]
        [--plain-quantize auto|int8|int4]   # plain decoding on other ONNX weights (speculation stays float32)

Takes every k-th case of the dev set (both kinds), and decodes one greedy draft of up to
`--tokens` tokens in block mode with no time budget, plain and speculative, one after the
other (which goes first alternates by case) on warm engines (cold prompts: the KV cache is
dropped before each run, so both pay the same prefill, which is not counted). On ONNX
Runtime each decoder has its own engine and backend, so that plain decoding runs the graph
of all layers as it does by default whatever speculation does (which loads the export's
layer segments if it drafts with the exit heads). Prints ms per token for each, the ratio,
how many drafts were identical, and speculation's counters.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run_devset import machine  # noqa: E402
from decoding.engine import CompletionRequest, Engine  # noqa: E402
from decoding.settings import Settings  # noqa: E402
from lsp.batch import load_cases  # noqa: E402
from models.loading import load_model  # noqa: E402


def backend_segments(engine: Engine) -> bool:
    """Whether an ONNX Runtime backend runs its layer segments (rather than the one graph)."""
    b = engine.backend
    return hasattr(b, "segments") and len(b.segments) > 1 and set(b.layers) == set(b.segments)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--monitors", action="store_true")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="both decoders on this backend (onnx: ONNX Runtime float32 on the CPU)")
    p.add_argument("--plain-quantize", default="none",
                   help="with --backend onnx: plain decoding's weights (auto: the default's); its drafts then "
                        "come from other weights, so `identical` no longer tests losslessness")
    args = p.parse_args()
    cases, _ = load_cases((ROOT / "benchmarks" / "devset.jsonl").read_text().splitlines())
    step = max(1, len(cases) // args.cases)
    cases = cases[::step][: args.cases]
    loaded = load_model(backend=args.backend)
    engine = Engine(loaded)
    engine.ngram_table(wait=True)  # built (or read from the cache) before timing starts
    plain = load_model(backend=args.backend, quantize=args.plain_quantize) if args.backend == "onnx" else None
    engines = {"plain": Engine(plain) if plain is not None else engine,
               "spec": engine}
    ws = ROOT / "benchmarks" / "workspace"
    wire = {"drafts": 1, "maxNewTokens": args.tokens, "timeBudgetMs": 600_000, "mode": "block",
            "monitors": args.monitors}
    plain_s = Settings.from_dict(wire)[0]
    spec_s = Settings.from_dict({**wire, "speculative": True})[0]
    ms = {"plain": 0.0, "spec": 0.0}
    tokens = {"plain": 0, "spec": 0}
    counters: dict[str, int] = defaultdict(int)  # speculation's counters (spec_* timings) over all cases
    same = 0
    for i, c in enumerate(cases):
        out = {}
        # Alternate which decoder goes first: the second run of a case finds jedi's
        # process-wide caches warm (with --monitors), and the machine as the first left it.
        runs = [("plain", plain_s), ("spec", spec_s)]
        for name, s in runs if i % 2 == 0 else runs[::-1]:
            e = engines[name]
            e.cached = []
            e.backend.reset(1)
            r = e.complete(CompletionRequest(c.text, c.offset(), str(ws / c.file), str(ws), s))
            ms[name] += r.timings["decode_ms"]
            tokens[name] += r.timings["generated_tokens"]
            out[name] = [d.token_ids for d in r.drafts]
            if name == "spec":
                for k, v in r.timings.items():
                    if k.startswith("spec_"):
                        counters[k[len("spec_"):]] += int(v)
        same += out["plain"] == out["spec"]
    mpt = {k: ms[k] / max(1, tokens[k]) for k in ms}
    cfg = engine.spec_cfg
    print(f"Command: `.venv/bin/python benchmarks/bench_speculative.py --cases {args.cases} --tokens {args.tokens}"
          f"{' --monitors' if args.monitors else ''}{' --backend onnx' if args.backend == 'onnx' else ''}"
          f"{f' --plain-quantize {args.plain_quantize}' if plain is not None and args.plain_quantize != 'none' else ''}`  ")
    print(f"Machine: {machine()}  ")
    print(f"Date: {datetime.date.today().isoformat()}. Model: {loaded.spec.name} on {loaded.backend.name}, exit heads at layers "
          f"{loaded.info.get('exit_heads')}; monitors {'on' if args.monitors else 'off'}.\n")
    print("| decoder | tokens | decode ms/token | ratio to plain | identical drafts | verify passes | drafted | "
          "accepted | acceptance | tokens per pass |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    weights = f" ({plain.quantize})" if plain is not None and plain.quantize != "none" else ""
    print(f"| plain greedy{weights} | {tokens['plain']} | {mpt['plain']:.1f} | 1.00x | - | {tokens['plain']} | - | - | - | 1.00 |")
    rounds = max(1, counters["rounds"])
    print(f"| speculative | {tokens['spec']} | {mpt['spec']:.1f} | {mpt['plain'] / mpt['spec']:.2f}x faster | "
          f"{same} / {len(cases)} | {counters['rounds']} | {counters['drafted']} | {counters['accepted']} | "
          f"{counters['accepted'] / max(1, counters['drafted']):.1%} | {tokens['spec'] / rounds:.2f} |")
    heads_drafted = counters["drafted"] - sum(counters[f"{k}_drafted"] for k in ("lookup", "near", "ngram"))
    heads_accepted = counters["accepted"] - sum(counters[f"{k}_accepted"] for k in ("lookup", "near", "ngram"))
    print(f"\nOf the drafted tokens, {counters['lookup_drafted']} came from context lookup on 3 tokens "
          f"({counters['lookup_accepted']} accepted), {counters['near_drafted']} from lookup on 2 or 1 "
          f"({counters['near_accepted']} accepted), {counters['ngram_drafted']} from the standard-library n-grams "
          f"({counters['ngram_accepted']} accepted) and {heads_drafted} from the exit heads ({heads_accepted} accepted).")
    print(f"\nFinal adaptive state: exit layer {cfg.layer}, draft length {cfg.max_draft}, per-layer acceptance "
          + json.dumps({k: round(v, 3) for k, v in sorted(cfg.alpha.items())})
          + ", free-draft acceptance " + json.dumps({k: round(cfg.acceptance(k), 3) for k in sorted(cfg.hits)})
          + ", measured ms per pass by tokens " + json.dumps({k: round(v, 1) for k, v in sorted(cfg.pass_ms.items())})
          + f", exit-head rounds measured at {cfg.overhead():.2f}x their modelled time"
          + (", the backend's segments loaded" if backend_segments(engines["spec"]) else "") + ".")


if __name__ == "__main__":
    main()
