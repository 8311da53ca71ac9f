"""Stream replay: how the bank learns from partial feedback, on recorded correctness (no LLM call).

Each seed holds out a stratified test set (`held_out_fraction`), starts the bank from a
stratified `initial_fraction` of the rest (every model's recorded cells), and streams the other
questions in a seeded random order. Each arriving question is routed from the current bank with
the chosen prior rule (the paper's eq. 4 by default; "shrunk" and "hier" with their settings
chosen on the initial bank by leave-one-out, as `replay` chooses them on its bank): the models
are ranked, the top-1's recorded correctness is the stream's score, and the question then joins
the bank with the cells the mode reveals:

- static: nothing (the bank stays the initial bank);
- chosen: the top-1 model's cell only;
- top-k: the cells of the K top-ranked models (the referencers SMCS asks);
- full: every model's recorded cell;
- explore / explore-top-k: as chosen / top-k, with models ranked by an upper-confidence score
  p_m + c * sqrt(log(n_support) / (1 + n_m)), n_m the model's labels in the support set and
  p_m the rule's estimate of the model's accuracy (with eq. 4: V / the similarity of the
  support questions the model has a label on, its bank-wide accuracy without any; the shrunk
  and hier rules' priors as they are). c is chosen on the initial bank (an inner stream
  over it, from `explore_grid`) unless `explore_c` fixes it.

Unrevealed cells are masked, never wrong (the bank's partial rows). A question with fewer than
two recorded models is left out of the stream, as `replay` leaves it out of its test set. Every
mode's final bank is also scored on the held-out set (top-1, the plain prior: no bonus).

Speed: the arrival order makes every growing bank a prefix of one permutation, so similarities
are computed once per block of arrivals against that prefix and shared by all modes; each mode
keeps only its revealed mask and tallies (numpy arrays), never a bank object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core
from smcs_graph.offline.evaluation.calibration import (
    DEFAULT_HIER_CALIBRATION_QUERIES,
    HierChoice,
    ShrunkChoice,
    calibrate_shrunk,
    hier_loo,
)
from smcs_graph.offline.evaluation.metrics import evaluate_rankings
from smcs_graph.offline.evaluation.priors import (
    hier_priors,
    rps_priors,
    shrunk_priors,
    similarity_matrix,
    unit_rows,
)
from smcs_graph.offline.evaluation.splits import stratified_split
from smcs_graph.offline.evaluation.stream_report import StreamReport, StreamRun, StreamSeed

__all__ = [
    "ALL_STREAM_MODES",
    "STREAM_MODES",
    "STREAM_RULES",
    "StreamMode",
    "StreamReport",
    "StreamRun",
    "StreamSeed",
    "StreamSettings",
    "run_stream",
]

StreamMode = Literal["static", "chosen", "top-k", "full", "explore", "explore-top-k"]
ALL_STREAM_MODES: tuple[StreamMode, ...] = (
    "static",
    "chosen",
    "top-k",
    "full",
    "explore",
    "explore-top-k",
)
STREAM_MODES: tuple[StreamMode, ...] = ALL_STREAM_MODES[:5]
"""The modes run by default."""
STREAM_RULES = ("paper", "shrunk", "hier")
"""Prior rules a stream can route with ("learned" fits a model per bank snapshot: not here)."""
DEFAULT_EXPLORE_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)

_FEEDBACK: dict[str, str] = {
    "static": "none",
    "chosen": "top1",
    "top-k": "topk",
    "full": "all",
    "explore": "top1",
    "explore-top-k": "topk",
}


@dataclass(frozen=True)
class StreamSettings:
    """What `run_stream` simulates."""

    rule: str = "paper"
    modes: tuple[StreamMode, ...] = STREAM_MODES
    seeds: tuple[int, ...] = tuple(range(10))
    initial_fraction: float = 0.05
    held_out_fraction: float = 0.1
    """Share of each category held out to score the final banks (0: no held-out set)."""
    k: int = 7
    """Models asked per question in the top-k modes (SMCS's default K)."""
    window: int = 1000
    """Stream questions per window of the windowed accuracy."""
    n_sup_base: int = 400
    gamma: float = 0.95
    support_rule: core.Rule = "paper"
    explore_c: float | None = None
    """The bonus weight c; None chooses it on the initial bank from `explore_grid`."""
    explore_grid: tuple[float, ...] = DEFAULT_EXPLORE_GRID
    limit: int | None = None
    """Stream at most this many questions per seed (None: all)."""
    block: int = 256
    """Arrivals per similarity block (memory: block x questions float64)."""

    def __post_init__(self) -> None:
        if self.rule not in STREAM_RULES:
            raise ValueError(
                f"a stream routes with rule {', '.join(map(repr, STREAM_RULES))}, got "
                f"{self.rule!r} (the learned rule refits per bank snapshot; use replay for it)"
            )
        if not self.modes or any(m not in ALL_STREAM_MODES for m in self.modes):
            raise ValueError(
                f"modes must name {', '.join(ALL_STREAM_MODES)} (one or more), got {self.modes!r}"
            )
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes must not repeat, got {self.modes!r}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if not 0.0 < self.initial_fraction < 1.0:
            raise ValueError(f"initial_fraction must be in (0, 1), got {self.initial_fraction}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        for name in ("k", "window", "n_sup_base", "block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or None), got {self.limit}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0.0):
            raise ValueError(f"gamma must be finite and >= 0, got {self.gamma}")
        cs = (*self.explore_grid, *(() if self.explore_c is None else (self.explore_c,)))
        if not self.explore_grid or any(not (math.isfinite(c) and c >= 0.0) for c in cs):
            raise ValueError("exploration weights must be finite and >= 0 (a non-empty grid)")


# --------------------------------------------------------------------------- the simulation


@dataclass(frozen=True)
class _Rule:
    """The prior rule and its settings for one seed (chosen on the initial bank)."""

    name: str
    n_sup_base: int
    gamma: float
    support_rule: core.Rule
    names: list[str]
    shrunk: ShrunkChoice | None = None
    hier: HierChoice | None = None


class _Bank:
    """One mode's bank: positions [0, size) of the arrival order, with the revealed cells."""

    def __init__(
        self,
        cap_t: NDArray[np.float64],
        meas_t: NDArray[np.bool_],
        codes: NDArray[np.intp],
        n_categories: int,
        initial: int,
    ) -> None:
        self.cap_t, self.codes = cap_t, codes
        self.revealed = np.zeros_like(meas_t)
        self.revealed[:initial] = meas_t[:initial]
        self.values = np.where(self.revealed, cap_t, 0.0)
        self.size = initial
        self.labels = 0
        self.correct = self.values[:initial].sum(axis=0)
        self.count = self.revealed[:initial].sum(axis=0).astype(np.float64)
        onehot = np.zeros((initial, n_categories))
        onehot[np.arange(initial), codes[:initial]] = 1.0
        self.cat_correct = self.values[:initial].T @ onehot  # (R, C)
        self.cat_count = self.revealed[:initial].T.astype(np.float64) @ onehot

    def add(self, position: int, models: NDArray[np.intp]) -> None:
        """The question at `position` (the next arrival) joins with the cells of `models`."""
        assert position == self.size
        self.revealed[position, models] = True
        self.values[position, models] = self.cap_t[position, models]
        self.correct[models] += self.cap_t[position, models]
        self.count[models] += 1.0
        self.cat_correct[models, self.codes[position]] += self.cap_t[position, models]
        self.cat_count[models, self.codes[position]] += 1.0
        self.size += 1
        self.labels += int(models.shape[0])

    def global_accuracy(self) -> NDArray[np.float64]:
        acc: NDArray[np.float64] = np.where(
            self.count > 0, self.correct / np.maximum(self.count, 1.0), 0.5
        )
        return acc

    def category_table(self, rule: _Rule) -> dict[str, NDArray[np.float64]]:
        assert rule.hier is not None
        table = core.shrunk_category_table(
            self.cat_correct, self.cat_count, rule.hier.category_strength
        )
        return {name: table[:, j] for j, name in enumerate(rule.names)}


def _route(
    rule: _Rule, bank: _Bank, sims: NDArray[np.float64], explore: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """The prior as a fraction (R,) of one query over the bank, each model's labels in its
    support set (R,), and the support set's size; `sims` (bank.size,) are its similarities to
    the bank."""
    support = np.flatnonzero(
        core.support_mask(sims, rule.n_sup_base, rule.gamma, rule.support_rule)
    )
    s = sims[support]
    labels = bank.revealed[support].sum(axis=0).astype(np.float64)
    if rule.name == "paper":
        v = s @ bank.values[support]
        # Eq. 4's ranking as a fraction; exploring, each model's weighted accuracy over its
        # own labels (its bank-wide accuracy without any), so few labels do not read as wrong.
        total = s @ bank.revealed[support] if explore else np.full(v.shape, s.sum())
        fallback = bank.global_accuracy() if explore else np.zeros_like(v)
        p: NDArray[np.float64] = np.divide(v, total, out=fallback, where=total > 0.0)
        return p, labels, support.shape[0]
    cap, mask = bank.cap_t[support].T, bank.revealed[support].T
    g = bank.global_accuracy()
    if rule.name == "shrunk":
        assert rule.shrunk is not None
        p = core.shrunk_prior_scores(
            s, cap, mask, g, rule.shrunk.strength, temperature=rule.shrunk.temperature
        )
        return p, labels, support.shape[0]
    assert rule.hier is not None
    p = core.hier_prior_scores(
        s,
        cap,
        mask,
        [rule.names[c] for c in bank.codes[support]],
        bank.category_table(rule),
        g,
        rule.hier.strength,
        temperature=rule.hier.temperature,
        category_temperature=rule.hier.category_temperature,
    )
    return p, labels, support.shape[0]


def _stream(
    unit: NDArray[np.float32],
    cap_t: NDArray[np.float64],
    meas_t: NDArray[np.bool_],
    codes: NDArray[np.intp],
    initial: int,
    modes: Sequence[str],
    rule: _Rule,
    k: int,
    c: float,
    block: int,
) -> dict[str, tuple[NDArray[np.bool_], _Bank]]:
    """Stream positions [initial, N) of the arrival order through every mode in lockstep."""
    n = unit.shape[0]
    banks = {m: _Bank(cap_t, meas_t, codes, len(rule.names), initial) for m in modes}
    hits = {m: np.zeros(n - initial, dtype=bool) for m in modes}
    for start in range(initial, n, block):
        stop = min(start + block, n)
        sims = similarity_matrix(unit[start:stop], unit[:stop])
        for mode in modes:
            bank, feedback = banks[mode], _FEEDBACK[mode]
            explore = mode.startswith("explore")
            for position in range(start, stop):
                recorded = meas_t[position]
                p, labels, support = _route(
                    rule, bank, sims[position - start, : bank.size], explore
                )
                if explore:
                    p = p + c * np.sqrt(math.log(max(support, 1)) / (1.0 + labels))
                keyed = np.where(recorded, p, -np.inf)
                ranked = np.argsort(-keyed, kind="stable")[: min(k, int(recorded.sum()))]
                hits[mode][position - initial] = cap_t[position, ranked[0]] == 1.0
                if feedback == "top1":
                    bank.add(position, ranked[:1])
                elif feedback == "topk":
                    bank.add(position, ranked)
                elif feedback == "all":
                    bank.add(position, np.flatnonzero(recorded))
    return {m: (hits[m], banks[m]) for m in modes}


def _held_out_top1(
    rule: _Rule,
    bank: _Bank,
    sims: NDArray[np.float64],
    truth: NDArray[np.float64],
    truth_mask: NDArray[np.bool_],
) -> float:
    """Top-1 of the bank's plain priors on the held-out questions (`sims` (Q, N) to every
    position; the bank's first `size` count)."""
    size = bank.size
    s, cap, mask = sims[:, :size], bank.cap_t[:size].T, bank.revealed[:size].T
    if rule.name == "paper":
        priors = rps_priors(s, cap, mask, rule.n_sup_base, rule.gamma, rule=rule.support_rule)
    elif rule.name == "shrunk":
        assert rule.shrunk is not None
        priors = shrunk_priors(
            s,
            cap,
            mask,
            bank.global_accuracy(),
            rule.n_sup_base,
            rule.gamma,
            rule.shrunk.strength,
            temperature=rule.shrunk.temperature,
            rule=rule.support_rule,
        )
    else:
        assert rule.hier is not None
        priors = hier_priors(
            s,
            cap,
            mask,
            [rule.names[c] for c in bank.codes[:size]],
            bank.category_table(rule),
            bank.global_accuracy(),
            rule.n_sup_base,
            rule.gamma,
            rule.hier.strength,
            temperature=rule.hier.temperature,
            category_temperature=rule.hier.category_temperature,
            rule=rule.support_rule,
        )
    return evaluate_rankings(priors, truth, truth_mask, coverage_k=(1,)).top1


def _seed_rule(
    cfg: StreamSettings,
    unit: NDArray[np.float32],
    cap: NDArray[np.float64],
    mask: NDArray[np.bool_],
    labels: list[str],
    names: list[str],
    seed: int,
) -> _Rule:
    """The rule's settings, chosen on the initial bank (`unit`, `cap`, `mask`) alone."""
    base = _Rule(cfg.rule, cfg.n_sup_base, cfg.gamma, cfg.support_rule, names)
    if cfg.rule == "shrunk":
        choice = calibrate_shrunk(
            unit, cap, mask, gamma=cfg.gamma, rule=cfg.support_rule, seed=seed
        )
        return _Rule("shrunk", choice.n_sup_base, cfg.gamma, cfg.support_rule, names, choice)
    if cfg.rule == "hier":
        hier = hier_loo(
            unit,
            cap,
            mask,
            labels,
            n_sup_base=cfg.n_sup_base,
            gamma=cfg.gamma,
            rule=cfg.support_rule,
            queries=DEFAULT_HIER_CALIBRATION_QUERIES,
            seed=seed,
        )[0]
        return _Rule("hier", cfg.n_sup_base, cfg.gamma, cfg.support_rule, names, hier=hier)
    return base


def _choose_c(
    cfg: StreamSettings,
    rule: _Rule,
    unit: NDArray[np.float32],
    cap_t: NDArray[np.float64],
    meas_t: NDArray[np.bool_],
    codes: NDArray[np.intp],
    seed: int,
) -> float:
    """The grid's best c on an inner stream over the initial bank (its own stratified
    `initial_fraction` first, the rest in a seeded order); ties go to the smaller c."""
    inner = stratified_split([str(c) for c in codes], 1.0 - cfg.initial_fraction, seed)
    order = np.concatenate([inner.bank, np.random.default_rng((seed, 3)).permutation(inner.test)])
    best: tuple[float, float] | None = None
    for c in sorted(cfg.explore_grid):
        hits, _ = _stream(
            unit[order],
            cap_t[order],
            meas_t[order],
            codes[order],
            inner.bank.shape[0],
            ("explore",),
            rule,
            cfg.k,
            c,
            cfg.block,
        )["explore"]
        score = float(hits.mean()) if hits.size else 0.0
        if best is None or score > best[0]:
            best = (score, c)
    assert best is not None
    return best[1]


def run_stream(
    embeddings: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike,
    categories: Sequence[str],
    models: Sequence[str],
    settings: StreamSettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> StreamReport:
    """Simulate the stream of every mode on each seed (see the module docstring)."""
    cfg = settings or StreamSettings()
    clock = time.perf_counter()
    emb = np.asarray(embeddings, dtype=np.float32)
    cap = np.asarray(capability, dtype=np.float64)
    mask = np.asarray(measured, dtype=bool)
    labels = [str(c) for c in categories]
    n, r = len(labels), len(models)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must be ({n}, d) for {n} questions, got {emb.shape}")
    if cap.shape != (r, n) or mask.shape != cap.shape:
        raise ValueError(
            f"capability and measured must be (models, questions) = ({r}, {n}); got "
            f"{cap.shape} and {mask.shape}"
        )
    if not np.isin(cap[mask], (0.0, 1.0)).all():
        raise ValueError("capability must hold only 0/1 in measured entries")
    if r < 2:
        raise ValueError("a stream needs at least two models")
    unit = unit_rows(emb)
    names, codes = core.category_codes(labels)
    usable = np.flatnonzero(mask.sum(axis=0) >= 2)
    report = StreamReport(models=list(models), questions=n, settings=cfg)
    for seed in cfg.seeds:
        pool_labels = [labels[i] for i in usable]
        if cfg.held_out_fraction > 0.0:
            outer = stratified_split(pool_labels, cfg.held_out_fraction, seed)
            rest, test = usable[outer.bank], usable[outer.test]
        else:
            rest, test = usable, usable[:0]
        start = stratified_split([labels[i] for i in rest], 1.0 - cfg.initial_fraction, seed)
        initial = rest[start.bank]
        arrivals = np.random.default_rng((seed, 1)).permutation(rest[start.test])
        if cfg.limit is not None:
            arrivals = arrivals[: cfg.limit]
        order = np.concatenate([initial, arrivals])
        n0 = initial.shape[0]
        cap_t, meas_t = cap[:, order].T.copy(), mask[:, order].T.copy()
        rule = _seed_rule(
            cfg,
            unit[initial],
            cap[:, initial],
            mask[:, initial],
            [labels[i] for i in initial],
            names,
            seed,
        )
        c: float | None = None
        if any(m.startswith("explore") for m in cfg.modes):
            c = cfg.explore_c
            if c is None:
                c = _choose_c(
                    cfg, rule, unit[initial], cap_t[:n0], meas_t[:n0], codes[initial], seed
                )
        streamed = _stream(
            unit[order],
            cap_t,
            meas_t,
            codes[order],
            n0,
            cfg.modes,
            rule,
            cfg.k,
            c or 0.0,
            cfg.block,
        )
        held_sims = similarity_matrix(unit[test], unit[order]) if test.size else None
        for mode in cfg.modes:
            hits, bank = streamed[mode]
            held = None
            if held_sims is not None:
                held = _held_out_top1(rule, bank, held_sims, cap[:, test].T, mask[:, test].T)
            report.runs.setdefault(mode, []).append(StreamRun(hits, bank.labels, held))
        report.seeds.append(
            StreamSeed(
                seed=seed,
                initial=int(n0),
                streamed=int(arrivals.shape[0]),
                held_out=int(test.shape[0]),
                skipped=int(n - usable.shape[0]),
                explore_c=c,
                shrunk=rule.shrunk,
                hier=rule.hier,
            )
        )
        if progress is not None:
            parts = [f"{m} {report.runs[m][-1].hits.mean():.4f}" for m in cfg.modes]
            extra = f" (explore c={c:g})" if c is not None else ""
            progress(
                f"seed {seed}: {n0} initial, {arrivals.shape[0]} streamed; top-1 along the "
                f"stream: {', '.join(parts)}{extra}; {time.perf_counter() - clock:.0f}s"
            )
    report.seconds = time.perf_counter() - clock
    return report
