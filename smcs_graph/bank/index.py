"""Fast exact support sets (RPS step 2) over a large in-memory bank matrix.

`VectorIndex` holds the bank's unit vectors in float32 and, by default, an int8 copy with one
scale per row. A query is scored against the int8 copy (a quarter of the memory traffic of
float32), every score carries a proven error bound, and only the rows that the bound cannot
rule out of the support set are re-scored exactly. The result is the support set of
`core.support_set` on the exact similarities, not an approximation: no recall is lost, and both
precisions return the same result bit for bit. The int8 pass is faster only where the CPU has
int8 dot-product (VNNI) kernels; `calibration` measures which precision a host should use.

Exact similarity here means the float64 dot product of the stored float32 unit vectors,
computed row by row (`numpy.einsum`), so that equal rows get equal similarities wherever they
sit in the matrix (BLAS matrix-vector products round differently by row position).

Why the bound holds: with x = s * xq + e (row scale s, int8 row xq, rounding residual e) and
q = t * qq + dq for the query, x.q - s * t * (xq.qq) = e.q + s * xq.dq, so the error is at most
max|e| * |q| + max|s * xq| * |dq| (Cauchy-Schwarz), plus float32 rounding of the scaled score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core

__all__ = ["Precision", "SupportResult", "VectorIndex", "unit_query", "unit_rows"]

Precision = Literal["int8", "float32"]

_BLOCK_ROWS = 65536  # rows per block while building (bounds float64 temporaries)
_UNIT_ROUNDOFF_32 = 2.0**-24
# Relative error of scaling an int32 dot product to float32 (a few roundings), as a margin.
_SCALE_SLACK = 1e-6
_NORM_SLACK = 1e-5


@dataclass(frozen=True, eq=False)
class SupportResult:
    """A support set: bank row indices (similarity descending, ties by row), exact cosines."""

    indices: NDArray[np.intp]
    similarities: NDArray[np.float64]
    threshold: float
    rescored: int
    """Rows whose exact similarity was computed (the whole bank on the exact path)."""


class VectorIndex:
    """The bank matrix for fast, exact support sets; `precision` picks the first-pass copy.

    "int8" (default) scores a quantized copy and re-scores the rows near the threshold;
    "float32" scores the float32 matrix with one BLAS product and re-scores likewise. Both
    return what `core.support_set` returns on `similarities(query)`.
    """

    def __init__(self, vectors: ArrayLike, *, precision: Precision = "int8") -> None:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise ValueError(f"vectors must be 2-D (N, d) with d >= 1, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError("vectors contain NaN or infinite values")
        if precision not in ("int8", "float32"):
            raise ValueError(f"precision must be 'int8' or 'float32', got {precision!r}")
        self._matrix: NDArray[np.float32] = unit_rows(matrix)
        self._precision: Precision = precision
        self._quantized: NDArray[np.int8] | None = None
        self._scales: NDArray[np.float32] | None = None
        self._residual = 0.0  # max |x - s * xq| over rows
        self._dequantized_norm = 0.0  # max |s * xq| over rows
        if precision == "int8":
            self._quantize()

    def _quantize(self) -> None:
        n, d = self._matrix.shape
        quantized = np.empty((n, d), dtype=np.int8)
        scales = np.empty(n, dtype=np.float32)
        residual = 0.0
        dequantized_norm = 0.0
        for start in range(0, n, _BLOCK_ROWS):
            block = self._matrix[start : start + _BLOCK_ROWS]
            peak = np.abs(block).max(axis=1)
            scale = np.where(peak > 0.0, peak / np.float32(127.0), np.float32(1.0))
            q = np.clip(np.rint(block / scale[:, np.newaxis]), -127, 127)
            approx = q * scale[:, np.newaxis]
            residual = max(residual, float(np.linalg.norm(block - approx, axis=1).max()))
            dequantized_norm = max(dequantized_norm, float(np.linalg.norm(approx, axis=1).max()))
            quantized[start : start + _BLOCK_ROWS] = q.astype(np.int8)
            scales[start : start + _BLOCK_ROWS] = scale
        # The norms above are float32 sums: widen them by far more than their rounding.
        residual += _NORM_SLACK
        dequantized_norm += _NORM_SLACK
        self._quantized, self._scales = quantized, scales
        self._residual, self._dequantized_norm = residual, dequantized_norm

    def with_precision(self, precision: Precision) -> VectorIndex:
        """The same rows with another first pass, sharing this index's float32 matrix."""
        if precision not in ("int8", "float32"):
            raise ValueError(f"precision must be 'int8' or 'float32', got {precision!r}")
        other = object.__new__(VectorIndex)
        other.__dict__.update(self.__dict__)
        other._precision = precision
        if precision == "float32":
            other._quantized, other._scales = None, None
            other._residual = other._dequantized_norm = 0.0
        elif self._quantized is None:
            other._quantize()
        return other

    # ------------------------------------------------------------------ properties

    @property
    def size(self) -> int:
        """Number of bank rows."""
        return int(self._matrix.shape[0])

    @property
    def dimension(self) -> int:
        return int(self._matrix.shape[1])

    @property
    def precision(self) -> Precision:
        return self._precision

    @property
    def nbytes(self) -> int:
        """Memory held by the matrices (float32 rows, plus the int8 copy and its scales)."""
        extra = 0
        if self._quantized is not None and self._scales is not None:
            extra = self._quantized.nbytes + self._scales.nbytes
        return int(self._matrix.nbytes + extra)

    # ------------------------------------------------------------------ queries

    def _query(self, query: ArrayLike) -> NDArray[np.float64]:
        # Round through float32: the query is compared exactly like a stored row.
        out: NDArray[np.float64] = unit_query(query, self.dimension).astype(np.float64)
        return out

    def _exact(self, rows: NDArray[np.intp] | None, q: NDArray[np.float64]) -> NDArray[np.float64]:
        block = self._matrix if rows is None else self._matrix[rows]
        sims: NDArray[np.float64] = np.einsum("ij,j->i", block.astype(np.float64), q)
        return np.clip(sims, -1.0, 1.0)

    def similarities(self, query: ArrayLike) -> NDArray[np.float64]:
        """Exact cosines (N,) of the query with every row (the reference for `support`)."""
        return self._exact(None, self._query(query))

    def _first_pass(self, q: NDArray[np.float64]) -> tuple[NDArray[np.float32], float]:
        """Approximate scores of every row and a bound on |approximate - exact|."""
        q_norm = float(np.linalg.norm(q))
        if self._quantized is None or self._scales is None:
            scores = self._matrix @ q.astype(np.float32)
            d = self.dimension
            rounding = d * _UNIT_ROUNDOFF_32 / (1.0 - d * _UNIT_ROUNDOFF_32)
            return scores, 2.0 * rounding * q_norm + _SCALE_SLACK
        peak = float(np.abs(q).max())
        step = peak / 127.0 if peak > 0.0 else 1.0
        qq = np.clip(np.rint(q / step), -127, 127)
        query_residual = float(np.linalg.norm(q - qq * step))
        dots = _int8_matvec(self._quantized, qq.astype(np.int8))
        scores = dots.astype(np.float32) * (self._scales * np.float32(step))
        bound = self._residual * q_norm + self._dequantized_norm * query_residual
        return scores, bound + _SCALE_SLACK

    def support(
        self,
        query: ArrayLike,
        n_sup_base: int = 400,
        gamma: float = 0.95,
        *,
        rule: core.Rule = "paper",
    ) -> SupportResult:
        """`core.support_set(self.similarities(query), n_sup_base, gamma, rule=rule)`, fast.

        Sorted by similarity descending, ties by row index; `threshold` is
        `core.support_threshold` of the same similarities (NaN for an empty index).
        """
        q = self._query(query)
        # Validates the arguments exactly like the reference does.
        core.support_set(np.empty(0), n_sup_base, gamma, rule=rule)
        n = self.size
        rank = n_sup_base if rule == "paper" else n_sup_base + 1
        if n == 0:
            return SupportResult(np.empty(0, dtype=np.intp), np.empty(0), math.nan, 0)
        if rank > n or gamma < 0.0:
            # The reference is the minimum, or the bound argument needs gamma >= 0: score all.
            return self._finish(
                np.arange(n, dtype=np.intp), self._exact(None, q), n_sup_base, gamma, rule
            )
        scores, bound = self._first_pass(q)
        kth = float(np.partition(scores, n - rank)[n - rank])
        # S_(rank) >= kth - bound, so the threshold gamma * S_(rank) >= gamma * (kth - bound)
        # (gamma >= 0); the top `rank` rows themselves score >= kth - bound too.
        lowest = kth - bound
        cut = min(lowest, gamma * lowest) - bound
        rows = np.flatnonzero(scores >= cut).astype(np.intp)
        return self._finish(rows, self._exact(rows, q), n_sup_base, gamma, rule)

    @staticmethod
    def _finish(
        rows: NDArray[np.intp],
        sims: NDArray[np.float64],
        n_sup_base: int,
        gamma: float,
        rule: core.Rule,
    ) -> SupportResult:
        # `rows` holds every row that can reach the top `rank`, so the rank-th largest
        # similarity among them is the bank's, and so is the threshold. `rows` ascends, so
        # core's order (similarity descending, position ascending) breaks ties by row.
        keep = core.support_set(sims, n_sup_base, gamma, rule=rule)
        return SupportResult(
            indices=rows[keep],
            similarities=sims[keep],
            threshold=core.support_threshold(sims, n_sup_base, gamma, rule=rule),
            rescored=int(rows.shape[0]),
        )


def _int8_matvec(matrix: NDArray[np.int8], vector: NDArray[np.int8]) -> NDArray[np.int32]:
    """Exact int32 dot products of int8 rows with an int8 vector (torch; fast with VNNI).

    Runs on one thread: the product is bound by memory bandwidth, which one core already
    saturates, and a parallel region waits for its slowest thread, so on a busy machine two
    threads measured 5x slower at the median (8.0 ms vs 1.5 ms at 100k rows).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result: Any = torch._int_mm(
            torch.from_numpy(matrix), torch.from_numpy(vector.reshape(-1, 1).copy())
        )
    finally:
        torch.set_num_threads(threads)
    out: NDArray[np.int32] = result.numpy()[:, 0]
    return out


def unit_rows(matrix: ArrayLike) -> NDArray[np.float32]:
    """The rows of `matrix` scaled to unit length (zero rows stay zero), float32, C-ordered."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.ascontiguousarray(m / np.where(norms > 0.0, norms, 1.0), dtype=np.float32)


def unit_query(query: ArrayLike, dimension: int, holder: str = "the index") -> NDArray[np.float32]:
    """`query` (a vector or one (1, d) row) as a float32 unit vector.

    ValueError unless it has `dimension` finite entries; `holder` names what holds the vectors
    it will be compared with, for the message.
    """
    q = np.asarray(query, dtype=np.float64)
    if q.ndim == 2 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 1 or q.shape[0] != dimension:
        raise ValueError(
            f"query has shape {q.shape} but {holder} holds {dimension}-dimensional vectors; "
            "embed the query with the bank's embedder"
        )
    if not np.isfinite(q).all():
        raise ValueError("query contains NaN or infinite values")
    norm = float(np.linalg.norm(q))
    out: NDArray[np.float32] = (q / norm if norm > 0.0 else q).astype(np.float32)
    return out
