"""Superposed decoding (Shen et al., NeurIPS'24): k drafts from one forward pass per token.

Each step feeds one input, the k drafts' newest token embeddings summed with weights
softmax(cumulative scores), and reads one output distribution. Every draft is extended
from that distribution's top tokens, rescored with an n-gram model of the draft's own
history, and the best k (draft, token) pairs go on. There is one KV cache, holding the
superposed inputs; no draft has a cache of its own.

Each draft keeps its own monitors (forked when it is extended) and stops on its own
(end of line or block, end of sequence, stop-on-uncertain); finished drafts wait in a
pool until no live draft can beat the k-th best of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from decoding.ngram import NgramMix
from decoding.sampling import Budget, Draft, Drafting, out_of_budget
from models.backend import Backend


@dataclass(frozen=True)
class SuperposedConfig:
    """The reference's values for k=3 (PAPERS.md); BENCHMARKS.md has the dev-set check."""

    alpha: float = 0.54  # weight of the n-gram log-probability against the model's
    temperature: float = 0.06  # of the shared distribution the candidates come from
    width: int = 3  # candidates per draft: the top width * k tokens
    penalty: float = 1000.0  # a draft with no n-gram support for any candidate falls behind the others


@dataclass
class _Live:
    drafting: Drafting
    score: float  # cumulative: sum of (1 - alpha) log p_LM + alpha log p_ngram


def decode_superposed(
    backend: Backend,
    logits: torch.Tensor,
    start: Drafting,
    k: int,
    budget: Budget,
    ngram: NgramMix | None,
    context: list[int],
    cfg: SuperposedConfig = SuperposedConfig(),
) -> list[Draft]:
    """Up to k drafts from `logits` [V] (the prediction after the prompt in the cache), best first.

    `start` is the empty draft every draft grows from (monitors, rules, healing); `context`
    the prompt's token ids, which the n-gram model reads before each draft's own tokens.
    """
    prompt_len = backend.length
    live = [_Live(start, 0.0)]
    done: list[_Live] = []
    stop = ""
    while live:
        if stop := out_of_budget(budget, len(live[0].drafting.draft.token_ids)):
            break
        if len(done) >= k and max(x.score for x in live) < sorted(x.score for x in done)[-k]:
            break  # scores only fall: no live draft can enter the best k any more
        shared = torch.log_softmax(logits / cfg.temperature, -1)  # [V]
        cands: list[tuple[float, int, int, torch.Tensor]] = []  # (score, draft, token, its masked logits)
        for i, x in enumerate(live):
            mask = x.drafting.mask()
            if x.drafting.reason:  # no token allowed: the draft ends where it is
                done.append(x)
                continue
            lp = x.drafting.constrain(shared, mask)
            # While re-typing the healed text, one way of typing it: the drafts branch after it.
            top = torch.topk(lp, min(cfg.width * k if x.drafting.healed else 1, lp.numel()))
            ok = torch.isfinite(top.values)
            if not bool(ok.any()):
                done.append(x)
                continue
            values, ids = top.values[ok].cpu(), top.indices[ok].cpu()  # few candidates: scored on the host
            lm = (values - torch.logsumexp(values, 0)).double().numpy()  # renormalised over the candidates
            term = (1 - cfg.alpha) * lm
            if ngram is not None and cfg.alpha > 0 and x.drafting.healed:
                p = ngram.probs(context + x.drafting.draft.token_ids, ids.numpy())
                if (p > 0).any():  # a token the n-grams never saw after this draft is out
                    term = term + cfg.alpha * np.log(np.where(p > 0, p, 1.0)) + np.where(p > 0, 0.0, -np.inf)
                else:
                    term = term - cfg.penalty
            masked = x.drafting.constrain(logits, mask)
            cands += [(x.score + float(t), i, int(v), masked) for t, v in zip(term, ids.tolist()) if math.isfinite(t)]
        cands.sort(key=lambda c: -c[0])
        nxt: list[_Live] = []
        seen: set[bytes] = set()  # two tokenizations of the same text are one draft
        for score, i, token, masked in cands[: 2 * k]:
            if len(nxt) >= k:
                break
            text = bytes(live[i].drafting.out) + live[i].drafting.vocab.token_bytes(token)
            if text in seen:
                continue
            seen.add(text)
            child = live[i].drafting.fork()
            if child.take(token, logits, masked):
                nxt.append(_Live(child, score))
            else:  # end of sequence, end of line or block, or unsure: a finished draft
                done.append(_Live(child, score))
        live = nxt
        if not live:
            break
        # One input for all drafts: their newest embeddings, weighted by softmax(scores).
        w = torch.softmax(torch.tensor([x.score for x in live], dtype=torch.float32), 0)  # [k']
        tokens = torch.tensor([[x.drafting.draft.token_ids[-1] for x in live]])  # [1, k']
        e = backend.embed(tokens)[0].float()  # [k', D]
        emb = (e * w.to(e.device)[:, None]).sum(0)  # [D]
        logits = backend.step(embeds=emb.view(1, 1, -1))[0, -1]
    backend.truncate(prompt_len)
    pool = sorted(done + live, key=lambda x: -x.score)
    out = [x.drafting.finish(stop or "max_tokens", 0.0) for x in pool[: max(k, 1) * 2]]
    return out
