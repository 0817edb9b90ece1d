"""The `draftls` command: `serve` (the language server), `complete` (one cursor) and `batch` (a file of cases)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from decoding.settings import Settings
from lsp.positions import to_offset

log = logging.getLogger("draftls")


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name, local HF directory, .gguf file or hub id (default smollm2-135m)")
    p.add_argument("--drafts", type=int, help="number of drafts (default 3)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="where the model runs (default auto)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"],
                   help="auto (default: ONNX Runtime where installed, else torch), torch, or onnx (ONNX Runtime, "
                        "exported on first use)")
    p.add_argument("--quantize", choices=["auto", "none", "int8", "int4"],
                   help="ONNX weights (default auto: int8 on CPUs with AVX-512 VNNI, else none)")
    p.add_argument("--max-new-tokens", type=int, dest="max_new_tokens", help="token budget per draft")
    p.add_argument("--mode", choices=["line", "block", "auto"], help="stop at the end of the line or block")
    p.add_argument("--decoder", choices=["greedy", "sampling", "superposed"], help="how drafts are decoded")
    p.add_argument("--context-tokens", type=int, dest="context_tokens", help="prefix window in tokens")
    p.add_argument("--time-budget-ms", type=int, dest="time_budget_ms", help="wall-clock budget per request")
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-kv-reuse", action="store_false", dest="kv_reuse", default=None)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="set",
                   help="any setting by its wire name, e.g. --set maxNewTokens=32 (value parsed as JSON)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the command line; unset flags keep the defaults."""
    names = ["model", "device", "backend", "quantize", "drafts", "max_new_tokens", "mode", "decoder", "context_tokens", "time_budget_ms",
             "temperature", "seed", "kv_reuse"]
    given: dict[str, object] = {}
    for item in getattr(args, "set", []):
        name, _, raw = item.partition("=")
        try:
            given[name.strip()] = json.loads(raw)
        except ValueError:
            given[name.strip()] = raw  # a bare string such as --set mode=line
    given |= {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    settings, warnings = Settings.from_dict(given)
    for w in warnings:
        print(f"draftls: {w}", file=sys.stderr)
    return settings


def cmd_complete(args: argparse.Namespace) -> int:
    from decoding.engine import CompletionRequest, Engine
    from models.loading import load_model
    from monitors.analysis import Analysis

    settings = settings_from_args(args)
    path = Path(args.path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # never written back
    except OSError as e:
        print(f"draftls: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 2
    offset = to_offset(text, args.line, args.character)
    t0 = time.perf_counter()
    req = CompletionRequest(text, offset, str(path.resolve()), str(path.resolve().parent), settings)
    analysis = Analysis()
    if settings.monitors:  # jedi reads the file while the model loads, as an editor's didOpen lets it
        analysis.warm(text, req.path, req.workspace)
    loaded = load_model(settings.model, device=settings.device, backend=settings.backend, quantize=settings.load_quantize,
                        progress=lambda m: print(f"draftls: {m}", file=sys.stderr))
    engine = Engine(loaded, analysis)
    load_ms = (time.perf_counter() - t0) * 1000
    result = engine.complete(req)
    timings = {"load_ms": load_ms, "load_source": loaded.source, **result.timings}
    if args.json:
        drafts = [{"text": d.text, "score": d.score, "stop": d.stop_reason} for d in result.drafts]
        print(json.dumps({"drafts": drafts, "timings": timings}, indent=2, ensure_ascii=False))
        return 0
    line_start = text.rfind("\n", 0, offset) + 1
    quant = {"none": "float32"}.get(loaded.quantize, loaded.quantize)
    backend = loaded.backend.name + (f" {quant}" if loaded.backend.name == "onnx" else "")
    print(f"{path}:{args.line}:{args.character}  model {loaded.spec.name} ({loaded.source}), backend {backend}")
    print(f"  cursor: {text[line_start:offset]!r}|")
    if not result.drafts:
        print("  (no suggestion)")
    for i, d in enumerate(result.drafts, 1):
        print(f"--- draft {i}  score {d.score:.3f}  stop {d.stop_reason}")
        print(d.text)
    t = timings
    print(
        f"--- timings: load {t['load_ms']:.0f} ms ({loaded.source}), prompt {t['prompt_tokens']} tokens "
        f"({t['reused_tokens']} reused), prefill {t['prefill_ms']:.0f} ms, decode {t['decode_ms']:.0f} ms "
        f"for {t['generated_tokens']} tokens ({t['ms_per_token']:.1f} ms/token), total {t['total_ms']:.0f} ms"
    )
    if "spec_rounds" in t:
        print(f"--- speculative: {t['spec_rounds']:.0f} verify passes, {t['spec_accepted']:.0f} of "
              f"{t['spec_drafted']:.0f} drafted tokens accepted")
    if "exit_mean_layers" in t:
        print(f"--- early exit: {t['exit_mean_layers']:.2f} layers per token on average")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from decoding.engine import Engine
    from lsp.batch import format_summary, load_cases, run_batch
    from models.loading import load_model

    settings = settings_from_args(args)
    try:
        with open(args.cases, encoding="utf-8") as f:
            cases, errors = load_cases(f)
    except (OSError, UnicodeDecodeError) as e:
        print(f"draftls: cannot read {args.cases}: {e}", file=sys.stderr)
        return 2
    for err in errors:
        print(f"draftls: skipped bad case, {err}", file=sys.stderr)
    cases = cases[: args.limit] if args.limit else cases
    if not cases:
        print("draftls: no valid cases to run", file=sys.stderr)
        return 2
    workspace = Path(args.workspace or Path(args.cases).resolve().parent).resolve()
    loaded = load_model(settings.model, device=settings.device, backend=settings.backend, quantize=settings.load_quantize,
                        progress=lambda m: print(f"draftls: {m}", file=sys.stderr))
    engine = Engine(loaded)
    progress = sys.stderr.isatty() and not args.quiet
    out = open(args.out, "w", encoding="utf-8") if args.out else None
    try:
        summary = run_batch(engine, cases, settings, workspace, out, progress)
    finally:
        if out is not None:
            out.close()
    print(f"{len(cases)} cases ({len(errors)} skipped), model {loaded.spec.name}, "
          f"decoder {settings.decoder}, drafts {settings.drafts}, mode {settings.mode}")
    print(format_summary(summary))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps({"settings": settings.to_wire(), "summary": summary}, indent=1))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lsp.server import serve

    # Command-line settings are the base; the client's settings override them.
    serve(settings_from_args(args), tcp=args.tcp, host=args.host)
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from models.loading import cache_root, load_model, model_key, onnx_cuts
    from models.onnx_backend import attention_for, available, quantize_for
    from models.onnx_export import export, export_dir

    if not available():
        print("draftls: onnxruntime is not installed (pip install 'draftls[onnx]')", file=sys.stderr)
        return 2
    loaded = load_model(args.model)
    attention = attention_for(args.device)
    quantize = quantize_for(args.quantize, args.device)  # auto: what backend onnx will load here
    out = Path(args.out) if args.out else export_dir(cache_root(), model_key(loaded), quantize, attention)
    t0 = time.perf_counter()
    export(loaded.backend.model, out, quantize, onnx_cuts(loaded),  # type: ignore[attr-defined]
           progress=lambda m: print(f"draftls: {m}", file=sys.stderr), attention=attention)
    print(f"draftls: exported in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="draftls", description="Code completion with a local LM steered by static analysis.")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the language server (stdio unless --tcp)")
    s.add_argument("--tcp", type=int, metavar="PORT", help="listen on a TCP port instead of stdio (debugging)")
    s.add_argument("--host", default="127.0.0.1", help="address for --tcp (default 127.0.0.1)")
    _settings_args(s)
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("complete", help="complete one position of a file and print the drafts")
    c.add_argument("path")
    c.add_argument("--line", type=int, required=True, help="0-based line")
    c.add_argument("--character", type=int, required=True, help="0-based column in UTF-16 units, as in LSP")
    c.add_argument("--json", action="store_true", help='print {"drafts": [...], "timings": {...}}')
    _settings_args(c)
    c.set_defaults(func=cmd_complete)
    b = sub.add_parser("batch", help="complete every case of a JSONL file and print a scored summary")
    b.add_argument("cases", help='JSONL, one case a line: {"id", "kind", "file", "line", "character", "text", '
                                 '"target", "ident"?}')
    b.add_argument("--out", help="write every case's drafts, timings and metrics here (JSONL)")
    b.add_argument("--workspace", help="folder the cases' `file` paths are relative to (default: the cases' folder)")
    b.add_argument("--limit", type=int, help="run only the first N valid cases")
    b.add_argument("--summary-json", help="also write the summary as JSON here")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _settings_args(b)
    b.set_defaults(func=cmd_batch)
    e = sub.add_parser("export-onnx", help="export a model to ONNX Runtime graphs ahead of time (else on first use)")
    e.add_argument("--model", help="model name, local HF directory, .gguf file or hub id (default smollm2-135m)")
    e.add_argument("--quantize", choices=["auto", "none", "int8", "int4"], default="auto",
                   help="auto (default: what `quantize: auto` loads on this machine), none (float32), int8 (Q8_0 "
                        "blocks) or int4 (Q4_1 blocks, LM head Q8_0)")
    e.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="where backend onnx will run it: the CPU's graphs use GroupQueryAttention, CUDA's plain "
                        "attention (default auto)")
    e.add_argument("--out", help="folder to write (default: the cache that backend onnx loads from)")
    e.set_defaults(func=cmd_export_onnx)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `draftls` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from models.registry import ModelNotFoundError
    from models.config import UnsupportedModelError

    try:
        return args.func(args)
    except (ModelNotFoundError, UnsupportedModelError) as e:
        print(f"draftls: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
