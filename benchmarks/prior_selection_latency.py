"""Prior-selection latency for one query at bank sizes 10k, 100k and 1M (dim 384).

Side by side in one run, per bank size, on clustered synthetic unit vectors (so that the
top-400 is a real neighbourhood, not noise):

- exact float32 numpy: one matrix-vector product over the bank, then `core.support_set`
  (what the bank does below `INDEX_MIN_ROWS` questions);
- `VectorIndex` int8 and float32 (smcs_graph.bank.index): first pass plus exact re-scoring of
  the rows near the threshold; its support set is checked equal to the exact one (recall 1.0);
  from `INDEX_MIN_ROWS` rows up the bank uses the one that this host measures faster
  (`smcs_graph.bank.calibration`, rerun here without its cache), marked "<- chosen";
- Chroma's HNSW index (cosine, ef_search 1000) for the top-400, up to --chroma-max rows
  (building it at 1M takes too long on a small machine), with its recall of the exact top-400.

Each timing covers the support set and the eq. 4 priors for 29 models (embedding excluded);
the "incl. embedding" column adds the median time to embed one question with MiniLM; "x exact"
is exact float32's time over the method's (above 1: faster than exact float32).

    .venv/bin/python benchmarks/prior_selection_latency.py [--sizes 10000,100000,1000000]
        [--queries 30] [--chroma-max 100000] [--no-embed]

Memory at 1M: the bank (1.5 GB) plus each index's own float32 copy and the int8 copy (~5 GB).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank import calibration
from smcs_graph.bank.index import VectorIndex
from smcs_graph.bank.retrieval import INDEX_MIN_ROWS

DIM = 384
N_SUP_BASE = 400
GAMMA = 0.95
MODELS = 29


def clustered_bank(n: int, seed: int = 0) -> NDArray[np.float32]:
    """n unit vectors around n/500 random centres (built in float32 chunks to spare memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(20, n // 500), DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        rows = centres[rng.integers(0, centres.shape[0], stop - start)]
        rows += rng.standard_normal((stop - start, DIM), dtype=np.float32) * np.float32(1.3)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:stop] = rows
    return out


def queries_near(bank: NDArray[np.float32], count: int, seed: int = 1) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    picked = bank[rng.integers(0, bank.shape[0], count)]
    noisy = picked + rng.standard_normal(picked.shape, dtype=np.float32) * np.float32(0.05)
    out: NDArray[np.float32] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return out


def timed(fn: Callable[[NDArray[np.float32]], object], queries: NDArray[np.float32]) -> float:
    """Median milliseconds of fn over the queries (after one warm-up call)."""
    fn(queries[0])
    samples = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        samples.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(samples)


def embed_ms() -> float:
    from smcs_graph.embedder import default_embedder

    embedder = default_embedder()
    questions = [
        f"Which of the following best explains observation number {i} in the experiment?"
        for i in range(20)
    ]
    embedder.embed(questions[:1])  # load the model
    samples = []
    for text in questions:
        start = time.perf_counter()
        embedder.embed([text])
        samples.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(samples)


def chroma_top400(
    bank: NDArray[np.float32], queries: NDArray[np.float32]
) -> tuple[float, float, list[NDArray[np.intp]]]:
    """Build seconds, median query ms, and the top-400 row ids per query from Chroma's HNSW."""
    import chromadb

    with tempfile.TemporaryDirectory() as folder:
        client = chromadb.PersistentClient(
            path=folder, settings=chromadb.Settings(anonymized_telemetry=False)
        )
        collection = client.create_collection(
            "bench",
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine", "ef_search": 1000, "ef_construction": 200}},
        )
        batch = client.get_max_batch_size()
        start = time.perf_counter()
        for lo in range(0, bank.shape[0], batch):
            hi = min(bank.shape[0], lo + batch)
            collection.add(ids=[str(i) for i in range(lo, hi)], embeddings=bank[lo:hi])
        build_s = time.perf_counter() - start
        found: list[NDArray[np.intp]] = []

        def query(q: NDArray[np.float32]) -> None:
            result = collection.query(query_embeddings=[q], n_results=N_SUP_BASE, include=[])
            found.append(np.array([int(i) for i in result["ids"][0]], dtype=np.intp))

        ms = timed(query, queries)
        return build_s, ms, found[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--chroma-max", type=int, default=100_000)
    parser.add_argument("--no-embed", action="store_true", help="skip the MiniLM timing")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    embedding = 0.0 if args.no_embed else embed_ms()
    print(f"cores: {os.cpu_count()}; {cpu()}; one query embedding (MiniLM): {embedding:.1f} ms")
    header = (
        f"{'bank':>9} {'method':<18} {'ms/query':>9} {'incl. embed':>11} {'x exact':>8} "
        f"{'recall':>7} {'build s':>8}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        rows, chosen = measure(n, args.queries, args.chroma_max)
        for name, ms, exact_ms, recall, build_s in rows:
            print(
                f"{n:>9} {name:<18} {ms:>9.2f} {ms + embedding:>11.2f} {exact_ms / ms:>7.2f}x "
                f"{recall:>7.3f} {build_s:>8.1f}" + ("  <- chosen" if name == chosen else "")
            )
        if n > args.chroma_max:
            print(f"{n:>9} Chroma HNSW        skipped (--chroma-max {args.chroma_max})")
        gc.collect()


def cpu() -> str:
    """The CPU model, whether it has VNNI int8 kernels, and torch's CPU capability."""
    model, flags = "unknown CPU", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info: dict[str, str] = {}
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
        model = info.get("model name", model)
        flags = set(info.get("flags", "").split())
    except OSError:
        pass
    import torch

    vnni = sorted(f for f in flags if "vnni" in f) or ["no VNNI"]
    return f"{model} ({'/'.join(vnni)}; torch {torch.backends.cpu.get_cpu_capability()})"


def chosen_path(bank: NDArray[np.float32]) -> str:
    """The method the bank would use at this size on this host (calibrated afresh)."""
    if bank.shape[0] < INDEX_MIN_ROWS:
        return "exact float32"
    result, _ = calibration.choose(bank, use_cache=False)
    return f"VectorIndex {result.precision}"


def measure(
    n: int, count: int, chroma_max: int
) -> tuple[list[tuple[str, float, float, float, float]], str]:
    """(method, ms per query, exact ms, recall, build seconds) at bank size n, and the method
    the bank chooses there."""
    bank = clustered_bank(n)
    queries = queries_near(bank, count)
    chosen = chosen_path(bank)
    capability = (np.random.default_rng(2).random((MODELS, n)) < 0.5).astype(np.float64)

    def exact(q: NDArray[np.float32]) -> None:
        sims = (bank @ q).astype(np.float64)
        idx = core.support_set(sims, N_SUP_BASE, GAMMA)
        core.prior_scores(sims[idx], capability[:, idx])

    exact_ms = timed(exact, queries)
    rows = [("exact float32", exact_ms, exact_ms, 1.0, 0.0)]
    for precision in ("int8", "float32"):
        start = time.perf_counter()
        index = VectorIndex(bank, precision=precision)  # type: ignore[arg-type]
        build_s = time.perf_counter() - start

        def fast(q: NDArray[np.float32], index: VectorIndex = index) -> None:
            result = index.support(q, N_SUP_BASE, GAMMA)
            core.prior_scores(result.similarities, capability[:, result.indices])

        ms = timed(fast, queries)
        recalls = []
        for q in queries[:10]:
            want = set(core.support_set(index.similarities(q), N_SUP_BASE, GAMMA).tolist())
            got = set(index.support(q, N_SUP_BASE, GAMMA).indices.tolist())
            recalls.append(len(want & got) / len(want))
        rows.append((f"VectorIndex {precision}", ms, exact_ms, float(np.mean(recalls)), build_s))
        del index
        gc.collect()
    if n <= chroma_max:
        build_s, ms, found = chroma_top400(bank, queries)
        recalls = []
        for q, ids in zip(queries, found, strict=True):
            top = np.argsort(-(bank @ q).astype(np.float64), kind="stable")[:N_SUP_BASE]
            recalls.append(len(set(top.tolist()) & set(ids.tolist())) / N_SUP_BASE)
        rows.append(("Chroma HNSW top-400", ms, exact_ms, float(np.mean(recalls)), build_s))
    return rows, chosen


if __name__ == "__main__":
    main()
