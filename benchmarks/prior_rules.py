"""What each prior rule costs at bank scale, side by side in one run (`core.prior_rules`).

Synthetic bank: N questions (default 100k) with unit 384-d embeddings (MiniLM's dimension) in
14 clusters, 30 models whose P(right) is a logistic function of the embedding, 5 % of cells
unmeasured. Per rule, with the graph's settings (`selection.prior_rule` of the default config;
the learned rule as the graph fits it, its blend on 3 held-out folds):

- shared s: the part fitted once from the whole bank (`_fit_shared`: the learned rule's map,
  folds and blend; the hier rule's category codes);
- fit s: `fit(bank)` in full (shared part, every model, P(correct)'s Platt scaling);
- add-one-model s: `refit_model` of a 31st model (the other 30 kept as they are);
- per query: `priors` of one query on its support set (the graph's path: the support set's
  columns), mean over queries, and its ratio to the paper rule's.

The support set's own cost (one (N,) similarity product and eq. 3) is the same for every rule
and is printed once.

    .venv/bin/python benchmarks/prior_rules.py [--questions 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smcs_graph import core
from smcs_graph.config import SMCSConfig
from smcs_graph.core.prior_rules import BankArrays, Evidence, PriorRuleBase
from smcs_graph.selection import prior_rule

MODELS = 30
DIM = 384


def _bank(n: int, seed: int = 0) -> BankArrays:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 14, size=n)
    emb = rng.normal(size=(14, DIM))[labels] + rng.normal(size=(n, DIM))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    skill = rng.normal(scale=2.0, size=(MODELS, DIM))
    p = 1.0 / (1.0 + np.exp(-(emb @ skill.T).T))
    cap = (rng.random((MODELS, n)) < p).astype(np.float64)
    measured = rng.random((MODELS, n)) > 0.05
    names = [f"m{i}" for i in range(MODELS)]
    return BankArrays(emb, cap, measured, [f"c{c}" for c in labels], names)


def _grown(bank: BankArrays) -> BankArrays:
    outcomes = (np.random.default_rng(2).random(len(bank)) < 0.5).astype(np.float64)
    return BankArrays(
        bank.embeddings,
        np.vstack([bank.capability, outcomes]),
        np.vstack([bank.measured, np.ones(len(bank), bool)]),
        bank.categories,
        [*bank.names, "new"],
    )


def _queries(bank: BankArrays, count: int, settings: SMCSConfig) -> tuple[list[Evidence], float]:
    """One query's support-set evidence per query (as the graph builds it), and the mean
    seconds of the support set itself (similarities and eq. 3)."""
    rng = np.random.default_rng(1)
    out, spent = [], 0.0
    for q in rng.integers(0, len(bank), size=count):
        query = bank.embeddings[q] + 0.05 * rng.normal(size=DIM).astype(np.float32)
        start = time.perf_counter()
        sims = np.clip((bank.embeddings @ query).astype(np.float64), -1.0, 1.0)
        idx = core.support_set(sims, settings.n_sup_base, settings.gamma)
        spent += time.perf_counter() - start
        unit = query.astype(np.float64) / np.linalg.norm(query)
        categories = [bank.categories[i] for i in idx]
        out.append(
            Evidence(
                sims[idx],
                bank.capability[:, idx],
                bank.measured[:, idx],
                categories,
                None,
                unit,
            )
        )
    return out, spent / count


def _per_query(rule: PriorRuleBase, names: list[str], queries: list[Evidence]) -> float:
    start = time.perf_counter()
    for evidence in queries:
        rule.priors(names, evidence)
    return (time.perf_counter() - start) / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    bank = _bank(args.questions)
    grown = _grown(bank)
    names = list(bank.names)
    base = SMCSConfig()
    queries, support_s = _queries(bank, args.queries, base)
    print(
        f"{args.questions} questions x {DIM}-d, {MODELS} models; support set per query "
        f"(similarities + eq. 3, every rule): {1000 * support_s:.2f} ms"
    )
    print(
        f"{'rule':8} {'shared s':>9} {'fit s':>8} {'add-one-model s':>16} "
        f"{'per query ms':>13} {'vs paper':>9}"
    )
    paper_q = None
    for name in ("paper", "shrunk", "hier", "learned"):
        rule = prior_rule(base.replace(prior_rule=name))
        start = time.perf_counter()
        rule._fit_shared(bank)
        shared_s = time.perf_counter() - start
        start = time.perf_counter()
        fitted = rule.fit(bank)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        fitted.refit_model("new", grown)
        add_s = time.perf_counter() - start
        per_q = _per_query(fitted, names, queries)
        paper_q = per_q if paper_q is None else paper_q
        print(
            f"{name:8} {shared_s:9.2f} {fit_s:8.2f} {add_s:16.3f} "
            f"{1000 * per_q:13.3f} {per_q / paper_q:9.2f}"
        )


if __name__ == "__main__":
    main()
