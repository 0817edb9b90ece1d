"""Train exit heads for a model on the Python standard library's source (CPU, frozen model).

    .venv/bin/python -m models.train_exit_heads [--model smollm2-135m] [--layers 4,6,8,11,15,20]
        [--rank 64] [--minutes 40] [--out models/heads/smollm2-135m.safetensors]

Data: every `.py` file of this interpreter's standard library (tests and vendored code
skipped): on every machine, and disjoint from the dev set and any held-out code. Files
are shuffled with a fixed seed; the last 5% are held out to report agreement.

Per step, a batch of 256-token windows runs through the frozen model once; at each chosen
layer the adapter's prediction through the shared final norm and LM head is trained
towards the final layer's distribution (KL divergence, on a random subset of positions
to keep the vocabulary-sized products cheap). The shortlist for drafting is the most
frequent token ids of the training text. The file records the command, data and date.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import sysconfig
import time
from collections import Counter
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from models.exit_heads import HEADS_DIR, ExitAdapter, ExitHeads
from models.llama import KVCache
from models.loading import load_model

WINDOW = 256


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "ensurepip")
    files = [p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts)]
    return sorted(files)


def windows(tok, files: list[Path], seed: int) -> list[list[int]]:
    out: list[list[int]] = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        ids = tok.encode(text)
        out += [ids[i : i + WINDOW] for i in range(0, len(ids) - WINDOW + 1, WINDOW)]
    random.Random(seed).shuffle(out)
    return out


@torch.no_grad()
def hidden_states(model, batch: torch.Tensor, layers: list[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Residual stream after each of `layers` layers [B, T, D], and final logits [B, T, V]."""
    cache = KVCache(model.cfg, batch.shape[0], torch.float32, batch.device)
    h = model.model.embed_tokens(batch)
    states: dict[int, torch.Tensor] = {}
    done = 0
    for layer in sorted(layers) + [model.cfg.num_layers]:
        h = model.run_layers(h, done, layer, cache)
        done = layer
        states[layer] = h
    final = states.pop(model.cfg.num_layers)
    return states, model.logits(final)


def agreement(model, heads: dict[int, ExitAdapter], data: list[list[int]], layers: list[int]) -> dict[int, tuple[float, float]]:
    """Top-1 agreement with the final layer per layer: (plain shared head, adapter)."""
    hits = {l: [0, 0] for l in layers}
    n = 0
    for i in range(0, len(data), 8):
        batch = torch.tensor(data[i : i + 8])
        states, final = hidden_states(model, batch, layers)
        want = final.argmax(-1)
        n += want.numel()
        with torch.no_grad():
            for l in layers:
                hits[l][0] += int((model.logits(states[l]).argmax(-1) == want).sum())
                hits[l][1] += int((model.logits(heads[l](states[l])).argmax(-1) == want).sum())
    return {l: (a / n, b / n) for l, (a, b) in hits.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layers", default="4,6,8,11,15,20")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--positions", type=int, default=96, help="positions per window that train the heads")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--shortlist", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    layers = sorted(int(x) for x in args.layers.split(","))
    loaded = load_model(args.model)
    model = loaded.backend.model
    model.requires_grad_(False)
    files = stdlib_files()
    data = windows(loaded.tokenizer, files, args.seed)
    held = max(16, len(data) // 20)
    train, test = data[:-held], data[-held:][:64]
    print(f"{len(files)} stdlib files, {len(train)} training windows of {WINDOW} tokens", file=sys.stderr)
    counts = Counter(t for w in train for t in w)
    shortlist = torch.tensor(sorted(t for t, _ in counts.most_common(args.shortlist)))
    coverage = sum(c for t, c in counts.most_common(args.shortlist)) / sum(counts.values())

    heads = {l: ExitAdapter(model.cfg.hidden_size, args.rank) for l in layers}
    params = [q for h in heads.values() for q in h.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    t_end = time.perf_counter() + args.minutes * 60
    step, seen, t0 = 0, 0, time.perf_counter()
    est_steps = None
    while time.perf_counter() < t_end:
        i = (step * args.batch) % max(1, len(train) - args.batch)
        batch = torch.tensor(train[i : i + args.batch])
        states, final = hidden_states(model, batch, layers)
        pick = torch.randperm(WINDOW)[: args.positions]
        target = F.log_softmax(final[:, pick], -1)  # [B, P, V]
        loss = torch.zeros(())
        for l in layers:
            student = F.log_softmax(model.logits(heads[l](states[l][:, pick])), -1)
            loss = loss + (target.exp() * (target - student)).sum(-1).mean()  # KL(final || head) per position
        opt.zero_grad()
        loss.backward()
        if est_steps is None and step == 4:  # cosine schedule over the steps the time allows
            est_steps = int(args.minutes * 60 / ((time.perf_counter() - t0) / 5))
        total = est_steps or 10**9
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
        opt.step()
        step += 1
        seen += batch.numel()
        if step % 20 == 0:
            print(f"step {step} tokens {seen} loss/layer {loss.item() / len(layers):.3f} "
                  f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
    agree = agreement(model, heads, test, layers)
    for l, (plain, trained) in agree.items():
        print(f"layer {l:2d}: top-1 agreement with the final layer {plain:.1%} plain head -> {trained:.1%} adapter")
    meta = {
        "model": args.model, "layers": layers, "rank": args.rank,
        "command": "python -m models.train_exit_heads " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": f"Python {sys.version.split()[0]} standard library ({len(files)} files, tests skipped), "
                f"{seen} training tokens, {step} steps",
        "date": date.today().isoformat(),
        "agreement": {str(l): {"plain": round(a, 4), "adapter": round(b, 4)} for l, (a, b) in agree.items()},
        "shortlist": {"size": len(shortlist), "coverage": round(coverage, 4)},
    }
    out = args.out or HEADS_DIR / f"{args.model}.safetensors"
    ExitHeads(heads, shortlist, meta).save(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
