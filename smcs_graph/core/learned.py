"""The learned prior rule: a per-model logistic model on a shared question map, blended with kNN.

    P(model m right on q) = sigmoid(theta_m . f(q) + b_m)                     (`LearnedModels`)
    f(q) = the first k principal components of the bank's embeddings, whitened  (`QuestionMap`)
    P(correct) = sigmoid(w_l * logit(learned) + w_k * logit(kNN) + w_0)          (`Blend`)

f is learned once from the bank's embeddings alone (no outcome enters it), so adding a model to
the bank fits only that model's (theta_m, b_m): one L2-penalized logistic regression by Newton's
method on its measured entries (`fit_model`). Unmeasured entries never count as wrong; they are
left out of the fit. The kNN evidence is another rule's estimate (replay uses `hier`); the blend's
three weights are shared by all models and fitted on held-out predictions of the bank.

Pure numpy: no I/O, no LangChain. Replay (`smcs_graph.offline.evaluation.learned`) chooses k,
the penalty and the blend on the bank split by cross-validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Blend",
    "LearnedModels",
    "LearnedPrior",
    "QuestionMap",
    "fit_blend",
    "fit_held_blend",
    "fit_model",
    "fit_models",
    "fit_question_map",
    "logit",
    "sigmoid",
]

_CLIP = 1e-4  # probabilities are clipped to [_CLIP, 1 - _CLIP] before a logit


def sigmoid(x: ArrayLike) -> NDArray[np.float64]:
    """1 / (1 + exp(-x)), stable for large |x|."""
    z = np.asarray(x, dtype=np.float64)
    out: NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -z))
    return out


def logit(p: ArrayLike) -> NDArray[np.float64]:
    """log(p / (1 - p)) of p clipped to [1e-4, 1 - 1e-4]."""
    q = np.clip(np.asarray(p, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    out: NDArray[np.float64] = np.log(q) - np.log1p(-q)
    return out


@dataclass(frozen=True, eq=False)
class QuestionMap:
    """f(q) = (e - mean) @ components: the bank embeddings' top principal directions, each
    scaled to unit variance over the bank."""

    mean: NDArray[np.float64]  # (d,)
    components: NDArray[np.float64]  # (d, k_max), columns by variance descending

    @property
    def rank(self) -> int:
        return int(self.components.shape[1])

    def __call__(self, embeddings: ArrayLike, rank: int | None = None) -> NDArray[np.float64]:
        """Features (Q, k) of embeddings (Q, d) (one (d,) gives (k,)); `rank` <= k keeps the
        first `rank` components."""
        e = np.asarray(embeddings, dtype=np.float64)
        k = self.rank if rank is None else rank
        if not 0 <= k <= self.rank:
            raise ValueError(f"rank must be in [0, {self.rank}], got {rank}")
        out: NDArray[np.float64] = (e - self.mean) @ self.components[:, :k]
        return out


def fit_question_map(embeddings: ArrayLike, rank: int) -> QuestionMap:
    """PCA of the bank's embeddings (N, d), whitened: the shared question map f.

    Its rank is min(rank, d), and at most N - 1 when N <= d (N centred rows span no more
    directions; those come from the (N, N) Gram matrix, not the (d, d) covariance)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError(f"embeddings must be (N >= 2, d), got shape {e.shape}")
    n, d = e.shape
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    mean = e.mean(axis=0)
    centred = e - mean
    if n <= d:
        rank = min(rank, n - 1)
        gram_values, gram_vectors = np.linalg.eigh(centred @ centred.T / (n - 1))
        order = np.argsort(gram_values)[::-1][:rank]
        values = gram_values[order]
        vecs = centred.T @ gram_vectors[:, order]
        vecs /= np.maximum(np.linalg.norm(vecs, axis=0), 1e-300)
    else:
        rank = min(rank, d)
        all_values, all_vectors = np.linalg.eigh(centred.T @ centred / (n - 1))
        order = np.argsort(all_values)[::-1][:rank]
        values, vecs = all_values[order], all_vectors[:, order]
    scale = 1.0 / np.sqrt(np.maximum(values, 1e-12))
    # A fixed sign per component (largest loading positive): the same bank gives the same map.
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(rank)])
    return QuestionMap(mean=mean, components=vecs * signs * scale)


def fit_model(
    features: ArrayLike,
    outcomes: ArrayLike,
    measured: ArrayLike | None = None,
    penalty: float = 10.0,
    *,
    start: tuple[NDArray[np.float64], float] | None = None,
    iterations: int = 25,
    tol: float = 1e-6,
) -> tuple[NDArray[np.float64], float]:
    """One model's (theta, b): L2-penalized logistic regression by Newton's method.

    Minimizes sum_i M_i * logloss(y_i, sigmoid(theta . x_i + b)) + penalty / 2 * |theta|^2
    (the bias b is not penalized) over the measured entries M (None: all). `start` warm-starts
    Newton (e.g. from a nearby penalty). A model with no measured entry gets theta = 0 and
    b = 0 (P = 0.5).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    mask = np.ones(y.shape, dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    if x.ndim != 2 or y.shape != (x.shape[0],) or mask.shape != y.shape:
        raise ValueError(
            f"features must be (N, k) with outcomes and measured (N,); got {x.shape}, "
            f"{y.shape}, {mask.shape}"
        )
    if not (math.isfinite(penalty) and penalty >= 0.0):
        raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
    k = x.shape[1]
    if not mask.any():
        return np.zeros(k), 0.0
    xm = np.hstack([x[mask], np.ones((int(mask.sum()), 1))])
    ym = y[mask]
    ridge = np.full(k + 1, penalty)
    ridge[k] = 1e-6  # the bias: unpenalized, kept finite when every outcome is the same
    if start is None:
        w = np.zeros(k + 1)
        w[k] = float(logit((ym.sum() + 0.5) / (ym.shape[0] + 1.0)))
    else:
        w = np.append(np.asarray(start[0], dtype=np.float64), start[1])
    for _ in range(iterations):
        p = sigmoid(xm @ w)
        grad = xm.T @ (p - ym) + ridge * w
        hess = (xm * (p * (1.0 - p))[:, np.newaxis]).T @ xm
        hess[np.diag_indices_from(hess)] += ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < tol:
            break
    return w[:k].copy(), float(w[k])


@dataclass(frozen=True, eq=False)
class LearnedModels:
    """Per-model parameters on a question map: theta (R, k), b (R,); row m is model m's."""

    theta: NDArray[np.float64]
    bias: NDArray[np.float64]

    def logits(self, features: ArrayLike) -> NDArray[np.float64]:
        """theta_m . f(q) + b_m of features (Q, k) -> (Q, R); one query (k,) -> (R,)."""
        out: NDArray[np.float64] = np.asarray(features, dtype=np.float64) @ self.theta.T + self.bias
        return out

    def with_model(self, row: int, theta: NDArray[np.float64], bias: float) -> LearnedModels:
        """A copy with model `row` replaced (row == R appends a model); the others untouched."""
        thetas, biases = self.theta.copy(), self.bias.copy()
        if row == thetas.shape[0]:
            return LearnedModels(np.vstack([thetas, theta]), np.append(biases, bias))
        thetas[row], biases[row] = theta, bias
        return LearnedModels(thetas, biases)


def fit_models(
    features: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None,
    penalty: float,
    *,
    start: LearnedModels | None = None,
) -> LearnedModels:
    """`fit_model` for each model (rows of `capability` (R, N)) on the same features (N, k).

    Each row is fitted on its own outcomes alone, by the same `fit_model` that adds one
    model: refitting a model gives bit-identical parameters and moves no other.
    """
    cap = np.asarray(capability, dtype=np.float64)
    mask = np.ones(cap.shape, dtype=bool) if measured is None else np.asarray(measured, bool)
    x = np.asarray(features, dtype=np.float64)
    if cap.ndim != 2 or mask.shape != cap.shape:
        raise ValueError(f"capability and measured must be (R, N); got {cap.shape}, {mask.shape}")
    thetas = np.zeros((cap.shape[0], x.shape[1]))
    biases = np.zeros(cap.shape[0])
    for m in range(cap.shape[0]):
        warm = None if start is None else (start.theta[m], float(start.bias[m]))
        thetas[m], biases[m] = fit_model(x, cap[m], mask[m], penalty, start=warm)
    return LearnedModels(thetas, biases)


@dataclass(frozen=True)
class Blend:
    """P(correct) = sigmoid(learned_weight * logit(learned) + knn_weight * logit(kNN) + offset)."""

    learned_weight: float = 1.0
    knn_weight: float = 0.0
    offset: float = 0.0

    def __call__(self, learned_logits: ArrayLike, knn: ArrayLike) -> NDArray[np.float64]:
        """The blended P(correct) of learned logits and kNN probabilities (same shape)."""
        z = (
            self.learned_weight * np.asarray(learned_logits, dtype=np.float64)
            + self.knn_weight * logit(knn)
            + self.offset
        )
        return sigmoid(z)


def fit_blend(
    learned_logits: ArrayLike,
    knn: ArrayLike,
    outcomes: ArrayLike,
    measured: ArrayLike | None = None,
) -> Blend:
    """The blend's weights by logistic regression on held-out predictions (measured entries
    only): learned logits and kNN probabilities of questions that neither estimate saw."""
    a = np.asarray(learned_logits, dtype=np.float64).ravel()
    b = logit(knn).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    mask = (
        np.ones(y.shape, dtype=bool)
        if measured is None
        else np.asarray(measured, dtype=bool).ravel()
    )
    theta, offset = fit_model(np.stack([a, b], axis=1), y, mask, penalty=1e-6)
    return Blend(float(theta[0]), float(theta[1]), offset)


def fit_held_blend(
    embeddings: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike,
    held_knn: tuple[NDArray[np.intp], NDArray[np.float64]],
    rank: int,
    penalty: float,
    *,
    folds: int = 3,
    seed: int = 0,
) -> Blend:
    """The blend fitted on `held_knn` = (bank rows, their held-out kNN priors (Q, R)) against
    `folds`-fold held-out learned logits of the same rows (map and models fitted without them)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    cap = np.asarray(capability, dtype=np.float64)
    mask = np.asarray(measured, dtype=bool)
    rows, knn = held_knn
    fold = np.random.default_rng(seed).permutation(emb.shape[0]) % folds
    held = np.zeros((emb.shape[0], cap.shape[0]))
    for f in range(folds):
        train = fold != f
        part = fit_question_map(emb[train], rank)
        x = part(emb)
        models = fit_models(x[train], cap[:, train], mask[:, train], penalty)
        held[~train] = models.logits(x[~train])
    return fit_blend(held[rows], knn, cap[:, rows].T, mask[:, rows].T)


# --------------------------------------------------------------------------- the rule


@dataclass(frozen=True, eq=False)
class LearnedPrior:
    """The fitted learned rule of one bank: map, per-model parameters (by name) and blend.

    `fit` learns everything from a bank's arrays; `refit_model` replaces or adds one model's
    parameters and leaves every other model's (and the map and the blend) as they were;
    `p_correct` gives P(correct) of the named models for one query or a batch, blended with
    the kNN evidence the caller passes (the hier rule's priors of the same queries).
    """

    question_map: QuestionMap
    models: dict[str, tuple[NDArray[np.float64], float]]
    blend: Blend
    penalty: float

    @classmethod
    def fit(
        cls,
        embeddings: ArrayLike,
        capability: ArrayLike,
        measured: ArrayLike,
        names: list[str],
        held_knn: tuple[NDArray[np.intp], NDArray[np.float64]] | None,
        *,
        rank: int,
        penalty: float,
        folds: int = 3,
        seed: int = 0,
    ) -> LearnedPrior:
        """Fit on a bank: `embeddings` (N, d), `capability`/`measured` (R, N) of `names`.

        `held_knn` = (rows, priors (Q, R)): held-out kNN priors of bank rows, on which the
        blend is fitted against `folds`-fold held-out learned logits (None: the learned
        estimate alone, blend weights (1, 0, 0)).
        """
        emb = np.asarray(embeddings, dtype=np.float64)
        cap = np.asarray(capability, dtype=np.float64)
        mask = np.asarray(measured, dtype=bool)
        qmap = fit_question_map(emb, rank)
        features = qmap(emb)
        fitted = fit_models(features, cap, mask, penalty)
        blend = Blend()
        if held_knn is not None:
            blend = fit_held_blend(emb, cap, mask, held_knn, rank, penalty, folds=folds, seed=seed)
        params = {
            name: (fitted.theta[m].copy(), float(fitted.bias[m])) for m, name in enumerate(names)
        }
        return cls(qmap, params, blend, penalty)

    def refit_model(
        self, name: str, embeddings: ArrayLike, outcomes: ArrayLike, measured: ArrayLike
    ) -> LearnedPrior:
        """A copy with model `name` fitted (added or replaced) on the bank's `embeddings`
        (N, d) and its outcomes (N,); no other model's parameters change."""
        theta, bias = fit_model(self.question_map(embeddings), outcomes, measured, self.penalty)
        return LearnedPrior(
            self.question_map, {**self.models, name: (theta, bias)}, self.blend, self.penalty
        )

    def logits(self, embeddings: ArrayLike, names: list[str]) -> NDArray[np.float64]:
        """theta_m . f(q) + b_m of `names` (a model without parameters: 0, P = 0.5) for one
        query (d,) -> (R,) or a batch (Q, d) -> (Q, R)."""
        features = self.question_map(embeddings)
        zero = (np.zeros(self.question_map.rank), 0.0)
        theta = np.stack([self.models.get(n, zero)[0] for n in names])
        bias = np.array([self.models.get(n, zero)[1] for n in names])
        out: NDArray[np.float64] = features @ theta.T + bias
        return out

    def p_correct(
        self, embeddings: ArrayLike, names: list[str], knn: ArrayLike
    ) -> NDArray[np.float64]:
        """P(correct) of `names` for the queries: the learned logits blended with `knn` (the
        kNN priors of the same queries and models, same shape)."""
        return self.blend(self.logits(embeddings, names), knn)
