"""Stage 2 of SMCS, Exploration-Exploitation Posterior Enhancement: prior drop, eqs. 5-7.

Prior drop (exploration) draws the referencer subsets of the aggregations; eq. 5 (consensus),
eq. 6 (perplexity) and eq. 7 (the hybrid score) choose among the aggregations' answers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph.core._common import Rule, reject_nan, softmax, uniform, unit_rows, vector

__all__ = [
    "hybrid_scores",
    "mean_pairwise_similarity",
    "perplexity",
    "prior_drop_distribution",
    "prior_drop_subsets",
    "subset_probability",
    "token_logprobs",
]


def prior_drop_distribution(priors: ArrayLike, *, mode: Rule = "paper") -> NDArray[np.float64]:
    """EPE step 2: p = softmax((V - mean V) / std V); mode="authors": p ~ exp((d - mean d) / D).

    Paper: population std; std == 0 or a single prior gives the uniform distribution. A spread
    below float resolution relative to |V| is rounding noise and also counts as std == 0.
    Authors: d = V - min V and D = sum(d^2) / sqrt(K); D == 0 gives uniform. This form is not
    scale invariant and is nearly uniform at realistic prior sizes.
    """
    v = vector(priors, "priors")
    if v.shape[0] == 0:
        raise ValueError("priors is empty: need at least one selected model")
    if not np.isfinite(v).all():
        raise ValueError("priors must be finite")
    if mode not in ("paper", "authors"):
        raise ValueError(f"mode must be 'paper' or 'authors', got {mode!r}")
    size = v.shape[0]
    if mode == "paper":
        centered = v - v.mean()
        std = float(np.sqrt(np.mean(centered**2)))
        noise = 16.0 * np.finfo(np.float64).eps * float(np.abs(v).max())
        if size == 1 or std <= noise:
            return uniform(size)
        return softmax(centered / std)
    d = v - v.min()
    denom = float(np.sum(d**2)) / math.sqrt(size)
    if denom == 0.0:
        return uniform(size)
    return softmax((d - d.mean()) / denom)


def prior_drop_subsets(
    priors: ArrayLike,
    n: int,
    k_drop: int = 1,
    *,
    rng: np.random.Generator | int | None = None,
    mode: Rule = "paper",
    distinct: bool = False,
) -> list[tuple[int, ...]]:
    """EPE step 2: n subsets of K - k_drop positions, successive draws from the prior-drop p.

    Each subset is drawn without replacement; after each draw p is renormalized over the
    positions left. Subsets hold at least one position (K - k_drop < 1 gives size 1) and are
    tuples of positions into `priors` in draw order. k_drop=0 gives all positions, in a
    sampled order. The same integer seed gives the same subsets.

    distinct=False: the paper's independent draws (subsets may repeat). distinct=True: no
    subset (as a set) repeats while an unused one is left: a repeat is drawn again, up to
    `DISTINCT_TRIES` times, then the most probable unused subset is taken (`_most_probable`).
    Once every subset of the size is used they may repeat, each used once more before any
    twice. The first draw is the independent one's.
    """
    if n < 1:
        raise ValueError(f"n (number of subsets) must be >= 1, got {n}")
    if k_drop < 0:
        raise ValueError(f"k_drop must be >= 0, got {k_drop}")
    p = prior_drop_distribution(priors, mode=mode)
    size = max(p.shape[0] - k_drop, 1)
    gen = np.random.default_rng(rng)
    if not distinct:
        return [_draw(p, size, gen) for _ in range(n)]
    total = math.comb(p.shape[0], size)
    used: set[frozenset[int]] = set()
    subsets: list[tuple[int, ...]] = []
    for _ in range(n):
        if len(used) == total:
            used.clear()  # every subset used: a new round
        drawn = _draw(p, size, gen)
        tries = 1
        while frozenset(drawn) in used and tries < DISTINCT_TRIES:
            drawn, tries = _draw(p, size, gen), tries + 1
        if frozenset(drawn) in used:
            drawn = _most_probable(p, size, used) or drawn
        used.add(frozenset(drawn))
        subsets.append(drawn)
    return subsets


DISTINCT_TRIES = 64
"""Draws per subset before `prior_drop_subsets(distinct=True)` takes the most probable unused."""
_MAX_ENUMERATED = 20_000
"""Subsets enumerated to find the most probable unused one (beyond: a repeat is kept; with
that many subsets, 64 draws all repeating is vanishingly rare)."""


def _draw(p: NDArray[np.float64], size: int, gen: np.random.Generator) -> tuple[int, ...]:
    """One subset of `size` positions, drawn without replacement from `p`."""
    remaining = list(range(p.shape[0]))
    drawn: list[int] = []
    for _ in range(size):
        weights = p[remaining]
        total = float(weights.sum())
        if total <= 0.0:
            # Every remaining weight underflowed to 0: fall back to uniform over them.
            weights = np.ones(len(remaining))
            total = float(len(remaining))
        cumulative = np.cumsum(weights)
        pos = int(np.searchsorted(cumulative, gen.random() * total, side="right"))
        # u * total can round up to the total; never pick past the last positive weight.
        pos = min(pos, int(np.flatnonzero(weights > 0.0)[-1]))
        drawn.append(remaining.pop(pos))
    return tuple(drawn)


def subset_probability(p: NDArray[np.float64], subset: Sequence[int]) -> float:
    """The probability that `_draw` gives `subset` as a set: the sum over its orders of the
    sequential draw probabilities (exact up to 6 positions; above, the product of p, which
    ranks subsets the same way when p is not too uneven)."""
    members = list(subset)
    if len(members) > 6:
        return float(np.prod(p[members]))
    total = 0.0
    for order in itertools.permutations(members):
        left, prob = 1.0, 1.0
        for i in order:
            prob *= p[i] / left if left > 0.0 else 0.0
            left -= p[i]
        total += prob
    return total


def _most_probable(
    p: NDArray[np.float64], size: int, used: set[frozenset[int]]
) -> tuple[int, ...] | None:
    """The unused subset of `size` positions most likely under `_draw`, its positions by p
    (highest first); None when there are too many to enumerate."""
    if math.comb(p.shape[0], size) > _MAX_ENUMERATED:
        return None
    best: tuple[int, ...] | None = None
    best_p = -1.0
    for combo in itertools.combinations(range(p.shape[0]), size):
        if frozenset(combo) in used:
            continue
        prob = subset_probability(p, combo)
        if prob > best_p:
            best, best_p = combo, prob
    if best is None:
        return None
    return tuple(sorted(best, key=lambda i: (-p[i], i)))


def mean_pairwise_similarity(
    embeddings: ArrayLike, *, include_self: bool = False
) -> NDArray[np.float64]:
    """Eq. 5: S_sim[i] = mean over j != i of cos(G_i, G_j); include_self=True: authors' sum / n.

    Rows are normalized (zero rows have similarity 0 to everything, themselves included). With
    a single candidate the paper's mean is over no pair and is defined as 0.0 (no consensus
    evidence); the authors' form gives its self-similarity, 1.0.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {emb.shape}")
    n = emb.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float64)
    unit = unit_rows(emb)
    gram = np.clip(unit @ unit.T, -1.0, 1.0)
    totals = gram.sum(axis=1)
    if include_self:
        with_self: NDArray[np.float64] = totals / n
        return with_self
    if n == 1:
        return np.zeros(1, dtype=np.float64)
    others: NDArray[np.float64] = (totals - np.diag(gram)) / (n - 1)
    return others


def _is_end_of_sequence(entry: object) -> bool:
    return isinstance(entry, Mapping) and entry.get("token") == "" and not entry.get("bytes")


def token_logprobs(content: Sequence[Mapping[str, Any]] | None) -> list[float] | None:
    """Eq. 6 input: the logprobs of an OpenAI-format `logprobs.content` list, or None.

    Trailing end-of-sequence entries are dropped: llama.cpp servers append one with token ""
    and empty bytes when the model stops by itself. (A token that splits a UTF-8 character also
    shows token "" but carries bytes: it is kept.) None, an empty list, or any missing,
    non-numeric, NaN or +inf logprob gives None: the caller flags perplexity as unavailable
    rather than guess. -inf (probability 0) is a legitimate value and is kept.
    """
    if not content:
        return None
    entries = list(content)
    while entries and _is_end_of_sequence(entries[-1]):
        entries.pop()
    if not entries:
        return None
    values: list[float] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            return None
        raw = entry.get("logprob")
        # bool is an int subclass; a True/False logprob is a malformed payload.
        if raw is None or isinstance(raw, bool) or not isinstance(raw, Real):
            return None
        value = float(raw)
        if math.isnan(value) or value == math.inf:
            return None
        values.append(value)
    return values


def perplexity(logprobs: Sequence[float]) -> float:
    """Eq. 6: PPL = exp(-mean token logprob); -inf logprob or overflow gives inf."""
    values = [float(x) for x in logprobs]
    if not values:
        raise ValueError("no token logprobs: perplexity needs at least one generated token")
    if any(math.isnan(x) or x == math.inf for x in values):
        raise ValueError("token logprobs must be finite or -inf (got NaN or +inf)")
    if any(x == -math.inf for x in values):
        return math.inf
    neg_mean = -math.fsum(values) / len(values)
    try:
        return math.exp(neg_mean)
    except OverflowError:
        return math.inf


def hybrid_scores(
    similarity: ArrayLike, perplexities: ArrayLike | None, lam: float = 1.0
) -> NDArray[np.float64]:
    """Eq. 7: S_total = S_sim + lam * (1 - PPL); perplexities None -> S_sim alone (caller flags).

    An infinite perplexity gives -inf (never chosen unless all are). lam == 0 ignores
    perplexity entirely (no 0 * inf NaN).
    """
    sim = vector(similarity, "similarity")
    reject_nan(sim, "similarity")
    if not math.isfinite(lam) or lam < 0.0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if perplexities is None:
        return sim.copy()
    ppl = vector(perplexities, "perplexities")
    if ppl.shape != sim.shape:
        raise ValueError(f"perplexities has shape {ppl.shape} but similarity has shape {sim.shape}")
    reject_nan(ppl, "perplexities")
    if lam == 0.0:
        return sim.copy()
    total: NDArray[np.float64] = sim + lam * (1.0 - ppl)
    return total
