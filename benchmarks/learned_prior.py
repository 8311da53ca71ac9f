"""What the learned prior rule costs: fit at 12k and 100k bank questions, one model's refit, and
the per-query prior time against the hier rule (the rule it blends with), as a ratio.

Synthetic bank: random unit 384-d embeddings (MiniLM's dimension), 29 models, 0/1 outcomes with
5% unmeasured. The fit is `core.learned.LearnedPrior.fit` with the graph's settings
(`selection.LEARNED_RANK`, `LEARNED_PENALTY`) and its 3-fold held-out blend; the per-query time
is the learned rule's work on top of hier (map, logits, blend) over hier's own (support set and
priors), both on one query against the whole bank.

    .venv/bin/python benchmarks/learned_prior.py [--sizes 12000,100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smcs_graph import core
from smcs_graph.core.learned import LearnedPrior
from smcs_graph.selection import LEARNED_PENALTY, LEARNED_RANK

MODELS = 29
DIM = 384


def _bank(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    skill = rng.normal(size=(MODELS, DIM)) * 0.5
    p = 1.0 / (1.0 + np.exp(-(emb @ skill.T).T))
    cap = (rng.random((MODELS, n)) < p).astype(np.float64)
    measured = rng.random((MODELS, n)) > 0.05
    categories = [f"c{i % 14}" for i in range(n)]
    return emb, cap, measured, categories


def _per_query(emb, cap, measured, categories, fit, names, queries: int) -> tuple[float, float]:
    """Seconds per query: hier alone, and the learned rule's extra work."""
    rng = np.random.default_rng(1)
    table = core.category_accuracy(cap, measured, categories, 10.0)
    g = core.global_accuracy(cap, measured)
    hier_s = learned_s = 0.0
    for q in rng.integers(0, emb.shape[0], size=queries):
        query = emb[q] + 0.01 * rng.normal(size=DIM).astype(np.float32)
        start = time.perf_counter()
        sims = np.clip((emb @ query).astype(np.float64), -1.0, 1.0)
        idx = core.support_set(sims, 400, 0.95)
        knn = core.hier_prior_scores(
            sims[idx],
            cap[:, idx],
            measured[:, idx],
            [categories[i] for i in idx],
            table,
            g,
            0.5,
        )
        middle = time.perf_counter()
        fit.p_correct(query.astype(np.float64), names, knn)
        end = time.perf_counter()
        hier_s += middle - start
        learned_s += end - middle
    return hier_s / queries, learned_s / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="12000,100000")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    names = [f"m{i}" for i in range(MODELS)]
    for n in (int(x) for x in args.sizes.split(",")):
        emb, cap, measured, categories = _bank(n)
        held_rows = np.arange(min(1000, n))
        held = (held_rows, np.clip(cap[:, held_rows].T * 0.6 + 0.2, 0.0, 1.0))
        start = time.perf_counter()
        fit = LearnedPrior.fit(
            emb, cap, measured, names, held, rank=LEARNED_RANK, penalty=LEARNED_PENALTY
        )
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        LearnedPrior.fit(
            emb, cap, measured, names, None, rank=LEARNED_RANK, penalty=LEARNED_PENALTY
        )
        shared_s = time.perf_counter() - start
        new = (np.random.default_rng(2).random(n) < 0.5).astype(np.float64)
        start = time.perf_counter()
        fit.refit_model("new-model", emb, new, np.ones(n, bool))
        refit_s = time.perf_counter() - start
        hier_q, extra_q = _per_query(emb, cap, measured, categories, fit, names, args.queries)
        print(
            f"{n:>7} questions, {MODELS} models: fit {fit_s:.2f}s (with the 3-fold blend; "
            f"{shared_s:.2f}s without), one-model refit {refit_s:.3f}s; per query hier "
            f"{1000 * hier_q:.2f}ms, learned on top {1000 * extra_q:.3f}ms "
            f"(learned/hier = {(hier_q + extra_q) / hier_q:.3f})"
        )


if __name__ == "__main__":
    main()
