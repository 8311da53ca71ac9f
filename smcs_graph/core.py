"""The numerical core of SMCS: pure numpy, one function per concept of the paper.

Map of the functions to the method (see the project's SMCS_SPEC.md):

Stage 1, Retrieval-based Prior Selection (RPS)
    step 1  `cosine_similarities`      S_i = cos(e, e_i) against the question bank
    step 2  `support_set`              eq. 3, the support set I
    step 3  `prior_scores`             eq. 4, the prior V[m] of each model
    step 4  `select_top_k`             the K referencers

Stage 2, Exploration-Exploitation Posterior Enhancement (EPE)
    step 2  `prior_drop_distribution`  p = softmax(z-scored V) (exploration)
            `prior_drop_subsets`       n subsets of K - K_drop references
    step 4  `mean_pairwise_similarity` eq. 5, S_sim of each aggregation
            `token_logprobs`           the generated tokens' logprobs (for eq. 6)
            `perplexity`               eq. 6, PPL = exp(-mean logprob)
            `hybrid_scores`            eq. 7, S_total = S_sim + lambda * (1 - PPL)

Evaluation
            `pairwise_ranking_score`   eq. 8, how well priors rank correct over wrong models

Beyond the paper (prior rules "shrunk" and "hier", chosen by replay evaluation,
smcs_graph.evaluation)
            `global_accuracy`          each model's bank-wide accuracy g_m
            `support_weights`          max(S, 0), or exp((S - max S) / T) with a temperature
            `shrunk_prior_scores`      weighted local accuracy shrunk toward g_m
            `category_accuracy`        each model's accuracy per bank category, shrunk to g_m
            `category_shares`          P(category | query) from the support set's categories
            `kernel_weights`           exp(-(1 - S) / T): an identical question weighs 1
            `hier_prior_scores`        local accuracy shrunk toward the inferred-category
                                       accuracy, itself shrunk toward g_m

Where the paper and the authors' released code differ, the paper is the default and the code's
behaviour is behind an explicit switch (`rule="authors"`, `mode="authors"`,
`include_self=True`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "PriorRule",
    "Rule",
    "category_accuracy",
    "category_codes",
    "category_shares",
    "cosine_similarities",
    "global_accuracy",
    "hier_prior_scores",
    "hybrid_scores",
    "kernel_weights",
    "mean_pairwise_similarity",
    "pairwise_ranking_score",
    "perplexity",
    "prior_drop_distribution",
    "prior_drop_subsets",
    "prior_scores",
    "select_top_k",
    "shrunk_category_table",
    "shrunk_prior_scores",
    "support_set",
    "support_threshold",
    "support_weights",
    "token_logprobs",
]

Rule = Literal["paper", "authors"]

# Elements per broadcast chunk in `pairwise_ranking_score` (bounds memory at large Q x R x R).
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- helpers


def _vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """A 1-D float64 array, or ValueError naming the argument."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _reject_nan(arr: NDArray[np.float64], name: str) -> None:
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")


def _unit_rows(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows scaled to unit length; zero rows stay zero (their similarities are then 0)."""
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    safe = np.where(norms > 0.0, norms, 1.0)
    out: NDArray[np.float64] = matrix / safe
    return out


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    """Numerically stable softmax (shifted by the maximum so exp never overflows)."""
    weights = np.exp(logits - logits.max())
    out: NDArray[np.float64] = weights / weights.sum()
    return out


def _uniform(size: int) -> NDArray[np.float64]:
    return np.full(size, 1.0 / size, dtype=np.float64)


# --------------------------------------------------------------------------- stage 1: RPS


def cosine_similarities(query: ArrayLike, bank: ArrayLike) -> NDArray[np.float64]:
    """RPS step 1: S_i = cos(query, bank_i), the similarities eqs. 3-4 use (zero vectors -> 0)."""
    q = _vector(query, "query")
    b = np.asarray(bank, dtype=np.float64)
    if b.ndim != 2:
        raise ValueError(f"bank must be 2-D (N, d), got shape {b.shape}")
    if b.shape[1] != q.shape[0]:
        raise ValueError(
            f"query has dimension {q.shape[0]} but bank rows have dimension {b.shape[1]}"
        )
    sims: NDArray[np.float64] = _unit_rows(b) @ _unit_rows(q)
    # Rounding can push |cos| a hair past 1.
    return np.clip(sims, -1.0, 1.0)


def _threshold(sims: NDArray[np.float64], n_sup_base: int, gamma: float, rule: Rule) -> float:
    rank = n_sup_base if rule == "paper" else n_sup_base + 1
    n = sims.shape[0]
    reference = sims.min() if n < rank else np.partition(sims, n - rank)[n - rank]
    return float(gamma * reference)


def support_threshold(
    similarities: ArrayLike,
    n_sup_base: int = 400,
    gamma: float = 0.95,
    *,
    rule: Rule = "paper",
) -> float:
    """Eq. 3's threshold gamma * S_(N_sup_base) (rule="authors": S_(N_sup_base+1)); NaN if empty."""
    sims = _vector(similarities, "similarities")
    _reject_nan(sims, "similarities")
    if sims.shape[0] == 0:
        return math.nan
    return _threshold(sims, n_sup_base, gamma, rule)


def support_set(
    similarities: ArrayLike,
    n_sup_base: int = 400,
    gamma: float = 0.95,
    *,
    rule: Rule = "paper",
) -> NDArray[np.intp]:
    """Eq. 3: I = {i : S_i >= gamma * S_(N_sup_base)}; rule="authors": '>' vs S_(N_sup_base+1).

    The reference S_(k) is the k-th largest similarity. The authors' code scales similarities by
    100 before thresholding; that scaling multiplies both sides of the comparison and cancels,
    so it is not reproduced. When the bank holds fewer than k questions, the reference is the
    smallest similarity (the whole bank is the neighbourhood).

    The formula is applied as written, so note:
    - with gamma < 1 the set can hold more than `n_sup_base` questions (all within the slack);
    - with a negative reference, gamma * S_(k) > S_(k): the threshold rises above the
      reference and the set can shrink, even to empty (e.g. `n_sup_base=1` and every
      similarity negative); the caller then has an all-zero prior.

    Returns indices sorted by similarity descending, ties by index ascending.
    """
    sims = _vector(similarities, "similarities")
    _reject_nan(sims, "similarities")
    if n_sup_base < 1:
        raise ValueError(f"n_sup_base must be >= 1, got {n_sup_base}")
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    if rule not in ("paper", "authors"):
        raise ValueError(f"rule must be 'paper' or 'authors', got {rule!r}")
    n = sims.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.intp)
    threshold = _threshold(sims, n_sup_base, gamma, rule)
    keep = sims >= threshold if rule == "paper" else sims > threshold
    idx = np.flatnonzero(keep)
    # lexsort: last key is primary -> similarity descending, then index ascending.
    order = np.lexsort((idx, -sims[idx]))
    return idx[order].astype(np.intp, copy=False)


def prior_scores(
    similarities: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None = None,
    *,
    weighted: bool = True,
) -> NDArray[np.float64]:
    """Eq. 4: V[m] = sum_i S_i * C[m, i] over the given columns; weighted=False counts correct.

    `similarities` (n,) and `capability` (R, n) hold the support-set columns only. An entry
    whose `measured` mask is False contributes nothing (neither correct nor wrong), and its
    capability value is ignored, so NaN may stand for "not profiled" there.
    """
    sims = _vector(similarities, "similarities")
    _reject_nan(sims, "similarities")
    cap = np.asarray(capability, dtype=np.float64)
    if cap.ndim != 2:
        raise ValueError(f"capability must be 2-D (R, n), got shape {cap.shape}")
    if cap.shape[1] != sims.shape[0]:
        raise ValueError(
            f"capability has {cap.shape[1]} columns but similarities has {sims.shape[0]} "
            "entries; pass the capability columns of the support set"
        )
    if measured is None:
        mask = np.ones(cap.shape, dtype=bool)
    else:
        mask = np.asarray(measured)
        if mask.shape != cap.shape:
            raise ValueError(
                f"measured has shape {mask.shape} but capability has shape {cap.shape}"
            )
        if mask.dtype != np.bool_:
            mask = mask.astype(bool)
    if not np.isfinite(cap[mask]).all():
        raise ValueError("capability has a non-finite value in a measured entry")
    contrib = np.where(mask, cap, 0.0)
    if not weighted:
        counts: NDArray[np.float64] = contrib.sum(axis=1)
        return counts
    priors: NDArray[np.float64] = contrib @ sims
    return priors


def select_top_k(priors: ArrayLike, k: int) -> NDArray[np.intp]:
    """RPS step 4: the top-k positions by prior (eq. 4's V), descending; ties: lower index first.

    k is capped at the pool size.
    """
    v = _vector(priors, "priors")
    _reject_nan(v, "priors")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    # A stable sort of -V keeps pool order among equal priors.
    order = np.argsort(-v, kind="stable")[:k]
    return order.astype(np.intp, copy=False)


# --------------------------------------------------------------------------- stage 2: EPE


def prior_drop_distribution(priors: ArrayLike, *, mode: Rule = "paper") -> NDArray[np.float64]:
    """EPE step 2: p = softmax((V - mean V) / std V); mode="authors": p ~ exp((d - mean d) / D).

    Paper: population std; std == 0 or a single prior gives the uniform distribution. A spread
    below float resolution relative to |V| is rounding noise and also counts as std == 0.
    Authors: d = V - min V and D = sum(d^2) / sqrt(K); D == 0 gives uniform. This form is not
    scale invariant and is nearly uniform at realistic prior sizes.
    """
    v = _vector(priors, "priors")
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
            return _uniform(size)
        return _softmax(centered / std)
    d = v - v.min()
    denom = float(np.sum(d**2)) / math.sqrt(size)
    if denom == 0.0:
        return _uniform(size)
    return _softmax((d - d.mean()) / denom)


def prior_drop_subsets(
    priors: ArrayLike,
    n: int,
    k_drop: int = 1,
    *,
    rng: np.random.Generator | int | None = None,
    mode: Rule = "paper",
) -> list[tuple[int, ...]]:
    """EPE step 2: n subsets of K - k_drop positions, successive draws from the prior-drop p.

    Each subset is drawn without replacement; after each draw p is renormalized over the
    positions left. Subsets hold at least one position (K - k_drop < 1 gives size 1) and are
    tuples of positions into `priors` in draw order. k_drop=0 gives all positions, in a
    sampled order. The same integer seed gives the same subsets.
    """
    if n < 1:
        raise ValueError(f"n (number of subsets) must be >= 1, got {n}")
    if k_drop < 0:
        raise ValueError(f"k_drop must be >= 0, got {k_drop}")
    p = prior_drop_distribution(priors, mode=mode)
    size = max(p.shape[0] - k_drop, 1)
    gen = np.random.default_rng(rng)
    subsets: list[tuple[int, ...]] = []
    for _ in range(n):
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
        subsets.append(tuple(drawn))
    return subsets


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
    unit = _unit_rows(emb)
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
    sim = _vector(similarity, "similarity")
    _reject_nan(sim, "similarity")
    if not math.isfinite(lam) or lam < 0.0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    if perplexities is None:
        return sim.copy()
    ppl = _vector(perplexities, "perplexities")
    if ppl.shape != sim.shape:
        raise ValueError(f"perplexities has shape {ppl.shape} but similarity has shape {sim.shape}")
    _reject_nan(ppl, "perplexities")
    if lam == 0.0:
        return sim.copy()
    total: NDArray[np.float64] = sim + lam * (1.0 - ppl)
    return total


# --------------------------------------------------------------------------- evaluation


def pairwise_ranking_score(
    priors: ArrayLike,
    correct: ArrayLike,
    measured: ArrayLike | None = None,
    *,
    ties: Literal["strict", "half"] = "strict",
) -> float:
    """Eq. 8: over all (j correct, k wrong) model pairs of each question, the share with V_j > V_k.

    `priors` and `correct` are (Q, R) (a 1-D pair is one question); only measured entries
    form pairs. ties="half" counts V_j == V_k as 0.5. No pair anywhere gives NaN.
    """
    v = np.asarray(priors, dtype=np.float64)
    c = np.asarray(correct)
    if v.ndim == 1:
        v = v[np.newaxis, :]
    if c.ndim == 1:
        c = c[np.newaxis, :]
    if v.ndim != 2:
        raise ValueError(f"priors must be 2-D (Q, R), got shape {v.shape}")
    if c.shape != v.shape:
        raise ValueError(f"correct has shape {c.shape} but priors has shape {v.shape}")
    if ties not in ("strict", "half"):
        raise ValueError(f"ties must be 'strict' or 'half', got {ties!r}")
    if measured is None:
        mask = np.ones(v.shape, dtype=bool)
    else:
        mask = np.asarray(measured)
        if mask.ndim == 1:
            mask = mask[np.newaxis, :]
        if mask.shape != v.shape:
            raise ValueError(f"measured has shape {mask.shape} but priors has shape {v.shape}")
        mask = mask.astype(bool)
    c_values = c[mask].astype(np.float64)
    if not np.isin(c_values, (0.0, 1.0)).all():
        raise ValueError("correct must hold only 0/1 (or bool) in measured entries")
    if np.isnan(v[mask]).any():
        raise ValueError("priors contains NaN in a measured entry")
    is_correct = mask & (np.where(mask, c, 0).astype(np.float64) == 1.0)
    is_wrong = mask & ~is_correct

    n_q, n_r = v.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, n_r * n_r))
    wins = 0.0
    pairs = 0
    for start in range(0, n_q, step):
        sl = slice(start, start + step)
        # pair[q, j, k]: model j correct and model k wrong on question q.
        pair = is_correct[sl, :, np.newaxis] & is_wrong[sl, np.newaxis, :]
        vj = v[sl, :, np.newaxis]
        vk = v[sl, np.newaxis, :]
        pairs += int(pair.sum())
        wins += float((pair & (vj > vk)).sum())
        if ties == "half":
            wins += 0.5 * float((pair & (vj == vk)).sum())
    if pairs == 0:
        return math.nan
    return wins / pairs


# --------------------------------------------------------------------------- selection rules
# Beyond the paper: rules chosen by replay evaluation (smcs_graph.evaluation).

PriorRule = Literal["paper", "shrunk", "hier"]
"""How priors are formed: "paper" (eq. 4, `prior_scores`), "shrunk" (`shrunk_prior_scores`) or
"hier" (`hier_prior_scores`)."""


def _bank_matrix(
    capability: ArrayLike, measured: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A whole bank's (R, N) capability matrix and its mask (None: all measured), checked."""
    cap = np.asarray(capability, dtype=np.float64)
    if cap.ndim != 2:
        raise ValueError(f"capability must be 2-D (R, N), got shape {cap.shape}")
    mask = np.ones(cap.shape, dtype=bool) if measured is None else np.asarray(measured, bool)
    if mask.shape != cap.shape:
        raise ValueError(f"measured has shape {mask.shape} but capability has shape {cap.shape}")
    return cap, mask


def global_accuracy(
    capability: ArrayLike, measured: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Each model's accuracy over its measured bank entries, (R,); 0.5 for a model with none.

    The prior that `shrunk_prior_scores` shrinks toward; compute it once per bank version.
    """
    cap, mask = _bank_matrix(capability, measured)
    counts = mask.sum(axis=1)
    correct = np.where(mask, cap, 0.0).sum(axis=1)
    acc: NDArray[np.float64] = np.where(counts > 0, correct / np.maximum(counts, 1), 0.5)
    return acc


def shrunk_prior_scores(
    similarities: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None,
    prior_accuracy: ArrayLike,
    strength: float,
    *,
    temperature: float | None = None,
) -> NDArray[np.float64]:
    """Empirical-Bayes priors: V[m] = (sum_i w_i C[m,i] + a * g_m) / (sum_i w_i M[m,i] + a).

    The weighted accuracy of each model on the support set (measured entries M only), shrunk
    toward its bank-wide accuracy g_m with strength a (a pseudo-count in units of weight).
    Weights: temperature None gives w_i = max(S_i, 0); a temperature T gives
    w_i = exp((S_i - max S) / T), so the nearest question weighs 1 and the others decay.
    Unlike eq. 4, a model is not favoured for having more measured neighbours, and a thin
    local record does not override a strong global one. a = 0 is the plain local accuracy (a
    model without local evidence keeps g_m).
    """
    sims = _vector(similarities, "similarities")
    _reject_nan(sims, "similarities")
    g = _vector(prior_accuracy, "prior_accuracy")
    if not math.isfinite(strength) or strength < 0.0:
        raise ValueError(f"strength must be finite and >= 0, got {strength}")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and > 0 (or None), got {temperature}")
    cap, mask = _support_outcomes(sims, capability, measured, g)
    return _shrink(cap, mask, support_weights(sims, temperature), g, strength)


def _support_outcomes(
    sims: NDArray[np.float64],
    capability: ArrayLike,
    measured: ArrayLike | None,
    prior: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The support-set capability (R, n) and its measured mask, checked against `sims` (n,)
    and `prior` (R,): what the shrinkage rules weigh."""
    cap = np.asarray(capability, dtype=np.float64)
    if cap.ndim != 2 or cap.shape[1] != sims.shape[0]:
        raise ValueError(
            f"capability must be (R, {sims.shape[0]}) (the support-set columns), got {cap.shape}"
        )
    if prior.shape[0] != cap.shape[0]:
        raise ValueError(f"prior_accuracy has {prior.shape[0]} entries for {cap.shape[0]} models")
    mask = np.ones(cap.shape, dtype=bool) if measured is None else np.asarray(measured, bool)
    if mask.shape != cap.shape:
        raise ValueError(f"measured has shape {mask.shape} but capability has shape {cap.shape}")
    if not np.isfinite(cap[mask]).all():
        raise ValueError("capability has a non-finite value in a measured entry")
    return cap, mask


def _shrink(
    cap: NDArray[np.float64],
    mask: NDArray[np.bool_],
    weights: NDArray[np.float64],
    target: NDArray[np.float64],
    strength: float,
) -> NDArray[np.float64]:
    """(sum_i w_i M C + a * target) / (sum_i w_i M + a); a = 0: the local accuracy, `target`
    for a model without local evidence."""
    correct = np.where(mask, cap, 0.0) @ weights
    evidence = mask.astype(np.float64) @ weights
    if strength == 0.0:
        local: NDArray[np.float64] = np.divide(
            correct, evidence, out=target.copy(), where=evidence > 0.0
        )
        return local
    posterior: NDArray[np.float64] = (correct + strength * target) / (evidence + strength)
    return posterior


def support_weights(
    similarities: ArrayLike, temperature: float | None = None
) -> NDArray[np.float64]:
    """Weights of support questions for `shrunk_prior_scores`: max(S, 0), or exp((S - max S) / T).

    Works on one support set (n,) or on rows of many (Q, n), the maximum taken per row.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    if temperature is None:
        linear: NDArray[np.float64] = np.maximum(sims, 0.0)
        return linear
    if sims.shape[-1] == 0:
        return np.zeros(sims.shape, dtype=np.float64)
    peak = sims.max(axis=-1, keepdims=True)
    soft: NDArray[np.float64] = np.exp((sims - peak) / temperature)
    return soft


def category_accuracy(
    capability: ArrayLike,
    measured: ArrayLike | None,
    categories: Sequence[str],
    strength: float = 0.0,
) -> dict[str, NDArray[np.float64]]:
    """Each model's accuracy per category, (R,) per label, shrunk toward its global accuracy.

    A[c, m] = (sum_{i in c} M[m,i] C[m,i] + b * g_m) / (sum_{i in c} M[m,i] + b), with g_m =
    `global_accuracy` over all columns and b = `strength` (a pseudo-count in questions). A
    model with no record in a category (and b = 0) gets g_m.
    """
    cap, mask = _bank_matrix(capability, measured)
    labels = [str(c) for c in categories]
    if len(labels) != cap.shape[1]:
        raise ValueError(f"categories has {len(labels)} entries for {cap.shape[1]} columns")
    names, codes = category_codes(labels)
    onehot = np.zeros((cap.shape[1], len(names)), dtype=np.float64)
    onehot[np.arange(cap.shape[1]), codes] = 1.0
    correct = np.where(mask, cap, 0.0) @ onehot  # (R, C)
    counts = mask.astype(np.float64) @ onehot
    table = shrunk_category_table(correct, counts, strength)
    return {name: table[:, j].copy() for j, name in enumerate(names)}


def category_codes(labels: Sequence[str]) -> tuple[list[str], NDArray[np.intp]]:
    """The sorted distinct labels and each label's index among them."""
    names = sorted(set(labels))
    position = {name: j for j, name in enumerate(names)}
    codes = np.fromiter((position[c] for c in labels), dtype=np.intp, count=len(labels))
    return names, codes


def shrunk_category_table(
    correct: ArrayLike, counts: ArrayLike, strength: float
) -> NDArray[np.float64]:
    """A[m, c] = (correct[m, c] + b g_m) / (counts[m, c] + b) from per-category tallies (R, C),
    g_m = each model's accuracy over all its counted questions (0.5 with none); g_m where
    counts + b = 0. b = `strength` (a pseudo-count in questions)."""
    if not math.isfinite(strength) or strength < 0.0:
        raise ValueError(f"strength must be finite and >= 0, got {strength}")
    right = np.asarray(correct, dtype=np.float64)
    seen = np.asarray(counts, dtype=np.float64)
    total_right, total_seen = right.sum(axis=1), seen.sum(axis=1)
    g = np.where(total_seen > 0, total_right / np.maximum(total_seen, 1), 0.5)
    total = seen + strength
    table: NDArray[np.float64] = np.divide(
        right + strength * g[:, np.newaxis],
        total,
        out=np.broadcast_to(g[:, np.newaxis], total.shape).copy(),
        where=total > 0.0,
    )
    return table


def category_shares(
    similarities: ArrayLike, categories: Sequence[str], temperature: float = 0.05
) -> dict[str, float]:
    """P(c | query) = sum_{i: c_i = c} u_i / sum_i u_i with u_i = exp((S_i - max S) / T).

    A similarity-weighted vote of the support questions' categories (the bank's categories are
    known; the query's is not). Empty support: an empty dict.
    """
    sims = _vector(similarities, "similarities")
    _reject_nan(sims, "similarities")
    labels = [str(c) for c in categories]
    if len(labels) != sims.shape[0]:
        raise ValueError(f"categories has {len(labels)} entries for {sims.shape[0]} similarities")
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"category temperature must be finite and > 0, got {temperature}")
    if sims.shape[0] == 0:
        return {}
    votes = np.exp((sims - sims.max()) / temperature)
    shares: dict[str, float] = {}
    for label, vote in zip(labels, votes.tolist(), strict=True):
        shares[label] = shares.get(label, 0.0) + vote
    total = float(votes.sum())
    return {label: value / total for label, value in shares.items()}


def kernel_weights(similarities: ArrayLike, temperature: float) -> NDArray[np.float64]:
    """w_i = exp(-(1 - S_i) / T): a question identical to the query weighs 1.

    Unlike `support_weights`, the scale is absolute: when even the nearest support questions
    are far from the query, their total weight is small and a prior dominates.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    weights: NDArray[np.float64] = np.exp((sims - 1.0) / temperature)
    return weights


def hier_prior_scores(
    similarities: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None,
    categories: Sequence[str],
    category_table: Mapping[str, ArrayLike],
    prior_accuracy: ArrayLike,
    strength: float,
    *,
    temperature: float = 0.1,
    category_temperature: float = 0.05,
) -> NDArray[np.float64]:
    """Hierarchical empirical-Bayes priors: local accuracy -> inferred category -> global.

        V[m]  = (sum_i w_i M[m,i] C[m,i] + a * pi_m) / (sum_i w_i M[m,i] + a)
        w_i   = exp(-(1 - S_i) / T)                                  (`kernel_weights`)
        pi_m  = sum_c P(c | query) * A[c, m]
        P(c | query) = sum_{i: c_i = c} u_i / sum_i u_i,  u_i = exp((S_i - max S) / T_c)
        A[c, m] = bank accuracy of model m in category c, shrunk toward g_m
                  (`category_accuracy`, passed in as `category_table`)

    over the support set i (its `categories` c_i). The query's category is never needed: it is
    inferred from its nearest bank questions. a = `strength` is a pseudo-count in kernel units
    (a question identical to the query weighs 1); a = 0 is the plain kernel-weighted local
    accuracy (a model without local evidence keeps pi_m). A category missing from the table,
    or an empty support set, falls back to `prior_accuracy` (g_m).
    """
    sims = _vector(similarities, "similarities")
    _reject_nan(sims, "similarities")
    g = _vector(prior_accuracy, "prior_accuracy")
    if not math.isfinite(strength) or strength < 0.0:
        raise ValueError(f"strength must be finite and >= 0, got {strength}")
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    cap, mask = _support_outcomes(sims, capability, measured, g)
    shares = category_shares(sims, categories, category_temperature)
    if shares:
        pi = np.zeros(cap.shape[0], dtype=np.float64)
        for label, share in shares.items():
            row = category_table.get(label)
            acc = g if row is None else _vector(row, f"category_table[{label!r}]")
            if acc.shape != g.shape:
                raise ValueError(
                    f"category_table[{label!r}] has {acc.shape[0]} entries for {g.shape[0]} models"
                )
            pi += share * acc
    else:
        pi = g.copy()
    return _shrink(cap, mask, kernel_weights(sims, temperature), pi, strength)
