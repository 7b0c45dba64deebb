#!/usr/bin/env python3
"""Fits the fusion's vector / lexical / context constants on LoCoMo-format data.

Input: the JSONL that `benches/examples/locomo_candidates.rs` dumps from a running
nexusd (every turn with its daemon id, every question with the lexical and dense
engines' top-100 lists). The score mirrors `daemon/src/recall/pipeline.rs`:
  lexical = bm25 / best bm25 of the list; vector = min-max of the dense cosine;
  base = lexical + w_vector * vector; the `top` best bases are strong hits and
  every memory within `window` writes of one gets w_context * base(hit) *
  decay^(distance - 1).
Reports recall@10 / hit@10 for each grid point and, to judge over-fitting, a
leave-one-conversation-out figure: fit on four conversations, score the fifth.
Fit on ../shared/data/locomo-dev only (the developers' half of LoCoMo).

Usage: python3 benches/fit/fit_fusion.py CANDIDATES.jsonl
"""
import collections
import itertools
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
turns = {r["turn"]["id"]: r["turn"] for r in rows if "turn" in r}
questions = [r["question"] for r in rows if "question" in r]
by_conv = collections.defaultdict(list)
for tid, t in turns.items():
    by_conv[t["conv"]].append(tid)
order = {c: sorted(ids) for c, ids in by_conv.items()}
pos = {i: p for c in order for p, i in enumerate(order[c])}


def ranked(q, w_vector, w_context, window, top, decay, depth=100):
    lex = dict(q["lists"]["lexical"][:depth])
    den = dict(q["lists"]["dense"][:depth])
    best = max(lex.values(), default=1) or 1
    lo, hi = min(den.values(), default=0), max(den.values(), default=1)
    base = {}
    for i in set(lex) | set(den):
        v = (den[i] - lo) / ((hi - lo) or 1) if i in den else 0
        base[i] = lex.get(i, 0) / best + w_vector * v
    ctx = collections.defaultdict(float)
    ids = order[q["conv"]]
    for h in sorted(base, key=lambda i: -base[i])[:top]:
        for n in ids[max(0, pos[h] - window): pos[h] + window + 1]:
            if n != h:
                ctx[n] = max(ctx[n], base[h] * decay ** (abs(pos[n] - pos[h]) - 1))
    score = {i: base.get(i, 0) + w_context * ctx.get(i, 0) for i in set(base) | set(ctx)}
    return sorted(score, key=lambda i: (-score[i], i))


def evaluate(params, convs=None, k=10):
    recall, hit, n = 0.0, 0.0, 0
    for q in questions:
        if convs and q["conv"] not in convs:
            continue
        got = {turns[i]["dia"] for i in ranked(q, *params)[:k]}
        found = len(set(q["evidence"]) & got)
        recall += found / len(q["evidence"])
        hit += found > 0
        n += 1
    return recall / n, hit / n, n


grid = list(itertools.product((0.3, 0.5, 0.7), (0.3, 0.5, 0.7, 1.0), (2, 3), (3, 5), (0.5, 0.7)))
best = max(grid, key=lambda p: evaluate(p)[0])
print("best on all conversations:", best, evaluate(best)[:2])
total_r = total_h = total_n = 0
for test in sorted(by_conv):
    train = set(by_conv) - {test}
    fitted = max(grid, key=lambda p: evaluate(p, train)[0])
    r, h, n = evaluate(fitted, {test})
    print(f"held out {test}: fitted {fitted} recall@10 {r:.4f} hit@10 {h:.4f}")
    total_r, total_h, total_n = total_r + r * n, total_h + h * n, total_n + n
print(f"leave-one-conversation-out: recall@10 {total_r / total_n:.4f} hit@10 {total_h / total_n:.4f}")
