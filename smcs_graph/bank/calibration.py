"""Which first pass `VectorIndex` uses on this host: measured once, then read from a cache.

Both first passes give the same support set (exact re-scoring of the same rows), so the choice
is speed only, and speed depends on the host: the int8 product is fast on CPUs with VNNI
kernels and slower than float32 BLAS without them (measured 35.0 ms int8 vs 16.6 ms exact
float32 per query at 100k rows on an AVX2 host without VNNI). So no bank size decides it.

`choose(matrix)` builds both indexes of the bank (sharing one float32 copy) and times
`VectorIndex.support` with each, interleaved on the bank's own rows as queries, for half a
second (at least 3 queries each); the median decides, as it is what queries will see on this
host (measured: on a busy 2-core host, float32's two BLAS threads wait on each other, while
the one-thread int8 pass does not). It keeps int8 only when it takes at most `_INT8_MARGIN`
of the float32 time (it holds an extra int8 copy), and returns the chosen index, so
calibrating costs the other index's build (the int8 quantization: seconds at 1M rows) plus
the timing. The answer is cached per process and on disk
(`$SMCS_CACHE_DIR/retrieval-calibration.json`, else `~/.cache/smcs-graph/...`), keyed by the
CPU model and flags, the numpy and torch versions, the vector dimension and the bank size
rounded to a power of two: measured once per host and size. An unwritable cache only costs a
measurement per process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from smcs_graph.bank.index import Precision, VectorIndex

__all__ = ["Calibration", "cache_file", "choose"]

_QUERIES = 20  # at most, timed per precision after one warm-up each
_MIN_QUERIES = 3
_BUDGET_S = 0.5  # of timing, after the builds
_INT8_MARGIN = 0.9  # int8 must take at most this fraction of the float32 time
_N_SUP_BASE, _GAMMA = 400, 0.95  # the graph's defaults: a typical support set
_FILE_NAME = "retrieval-calibration.json"

_memo: dict[str, Calibration] = {}
_memo_lock = threading.Lock()


@dataclass(frozen=True)
class Calibration:
    """The first pass chosen for one host and bank size, and the timings it was chosen by."""

    precision: Precision
    int8_ms: float
    float32_ms: float
    rows: int
    """Rows the timings were measured on."""
    key: str


def choose(
    matrix: NDArray[np.float32], *, use_cache: bool = True
) -> tuple[Calibration, VectorIndex | None]:
    """The calibration for `matrix`'s host and size, and the chosen index if it was built.

    The index comes back when this call measured (None when the answer was cached).
    `use_cache=False` measures anyway (and stores the new result).
    """
    n, dim = (int(s) for s in matrix.shape)
    key = _key(n, dim)
    if use_cache:
        found = _cached(key)
        if found is not None:
            return found, None
    float32 = VectorIndex(matrix, precision="float32")
    if importlib.util.find_spec("torch") is None:  # the int8 kernels come from torch
        return Calibration("float32", math.nan, math.nan, n, key), float32
    indexes: dict[Precision, VectorIndex] = {
        "float32": float32,
        "int8": float32.with_precision("int8"),
    }
    queries = matrix[np.unique(np.linspace(0, n - 1, num=min(n, _QUERIES)).astype(np.intp))]
    timings = _measure(indexes, queries)
    int8_ms, float32_ms = float(timings["int8"]), float(timings["float32"])
    precision: Precision = "int8" if int8_ms <= _INT8_MARGIN * float32_ms else "float32"
    result = Calibration(precision, int8_ms, float32_ms, n, key)
    _store(result)
    return result, indexes[precision]


def cache_file() -> Path:
    """Where calibrations are kept: under `$SMCS_CACHE_DIR`, else ~/.cache/smcs-graph."""
    root = os.environ.get("SMCS_CACHE_DIR")
    folder = Path(root).expanduser() if root else Path.home() / ".cache" / "smcs-graph"
    return folder / _FILE_NAME


def _measure(
    indexes: dict[Precision, VectorIndex], queries: NDArray[np.float32]
) -> dict[Precision, float]:
    """Median milliseconds of one support set per precision, the queries interleaved until
    `_BUDGET_S` is spent (at least `_MIN_QUERIES`)."""
    samples: dict[Precision, list[float]] = {p: [] for p in indexes}
    for index in indexes.values():
        index.support(queries[0], _N_SUP_BASE, _GAMMA)  # warm-up
    deadline = time.perf_counter() + _BUDGET_S
    for done, q in enumerate(queries):
        if done >= _MIN_QUERIES and time.perf_counter() > deadline:
            break
        for precision, index in indexes.items():
            start = time.perf_counter()
            index.support(q, _N_SUP_BASE, _GAMMA)
            samples[precision].append(1000.0 * (time.perf_counter() - start))
    return {p: statistics.median(s) for p, s in samples.items()}


def _key(rows: int, dim: int) -> str:
    bucket = round(math.log2(max(rows, 1)))
    return f"{_host()}|numpy {np.__version__}|torch {_version('torch')}|d{dim}|rows~2^{bucket}"


@functools.cache
def _host() -> str:
    """The CPU model and a digest of its feature flags (what decides the kernels' speed)."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name == "model name" and not model:
                    model = value.strip()
                elif name in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    model = model or platform.processor() or "unknown CPU"
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{model}|{platform.machine()}|flags {digest}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def _cached(key: str) -> Calibration | None:
    with _memo_lock:
        found = _memo.get(key)
        if found is None:
            found = _read_file().get(key)
            if found is not None:
                _memo[key] = found
        return found


def _store(result: Calibration) -> None:
    with _memo_lock:
        _memo[result.key] = result
        path = cache_file()
        entries = {k: asdict(v) for k, v in _read_file().items()}
        entries[result.key] = asdict(result)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def _read_file() -> dict[str, Calibration]:
    """The calibrations on disk; an unreadable or malformed file reads as none."""
    try:
        raw: Any = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Calibration] = {}
    for key, entry in raw.items():
        try:
            found = Calibration(**entry)
        except TypeError:
            continue
        if found.precision in ("int8", "float32") and found.key == key:
            out[key] = found
    return out


def _forget() -> None:
    """Drop the per-process cache (tests: the next lookup reads the file)."""
    with _memo_lock:
        _memo.clear()
