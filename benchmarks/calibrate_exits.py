"""Calibrate the early-exit thresholds of the shipped exit heads on the dev set.

    .venv/bin/python benchmarks/calibrate_exits.py [--cases 100] [--precision 0.95] [--write]

For every case, the code before the cursor (at most `--context` tokens) runs through the
model once, teacher-forced. At each of its last `--positions` positions, every exit head
gives its top token and confidence (shortlisted, as early exit reads it) and the full model
its top token. Per layer, the threshold is the lowest confidence at which the exits agree
with the full model at least `--precision` of the time; a layer that never gets there is
not exited at. `--write` stores the thresholds in the heads file's metadata, where
`load_model` reads them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decoding.early_exit import calibrate  # noqa: E402
from lsp.batch import load_cases  # noqa: E402
from models.exit_heads import ExitHeads, shipped_heads  # noqa: E402
from models.loading import load_model  # noqa: E402


@torch.inference_mode()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=100)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--positions", type=int, default=128)
    p.add_argument("--precision", type=float, default=0.95)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    loaded = load_model()
    b, tok = loaded.backend, loaded.tokenizer
    layers = sorted(b.exit_heads)
    if not layers:
        raise SystemExit("this model has no exit heads")
    cases, _ = load_cases((ROOT / "benchmarks" / "devset.jsonl").read_text().splitlines())
    cases = cases[:: max(1, len(cases) // args.cases)][: args.cases]
    conf: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    agree: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    for c in cases:
        ids = tok.encode(c.text[: c.offset()])[-args.context :]
        if len(ids) < 2:
            continue
        b.reset(1)
        h, done, states = b.embed(torch.tensor([ids])), 0, {}
        for cut in [*layers, b.config.num_layers]:
            h = b.run_layers(h, done, cut)
            done = cut
            states[cut] = h[:, -args.positions :]
        want = b.exit_logits(states[b.config.num_layers], b.config.num_layers)[0].argmax(-1)  # [P]
        for l in layers:
            probs = torch.softmax(b.draft_logits(states[l], l)[0], -1)  # [P, V]
            top = probs.max(-1)
            conf[l].append(top.values)
            agree[l].append(top.indices == want)
    b.reset(1)
    thresholds: dict[str, float] = {}
    print(f"| layer | positions | agree (all) | threshold for {args.precision:.0%} | exits at it |")
    print("|---|---|---|---|---|")
    for l in layers:
        cf, ag = torch.cat(conf[l]), torch.cat(agree[l])
        t = calibrate(cf, ag, args.precision)
        share = float((cf >= t).float().mean()) if t is not None else 0.0
        print(f"| {l} | {len(cf)} | {float(ag.float().mean()):.1%} | {'-' if t is None else f'{t:.3f}'} | {share:.1%} |")
        if t is not None:
            thresholds[str(l)] = round(t, 4)
    print(json.dumps(thresholds))
    if args.write:
        path = shipped_heads(loaded.spec.name)
        assert path is not None
        heads = ExitHeads.load(path, b.config.hidden_size)
        heads.meta["exit_thresholds"] = thresholds
        heads.meta["exit_calibration"] = (
            f"benchmarks/calibrate_exits.py --cases {args.cases} --context {args.context} --positions "
            f"{args.positions} --precision {args.precision}, dev set, {datetime.date.today().isoformat()}")
        heads.save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
