"""What the verification stamp saves: `model_file` on a verified GGUF against hashing it again.

Side by side in one run, for each local model whose parts are installed: a full SHA-256 of
its GGUF (what every start would pay without the stamp), and `model_file` once the stamp
records the file (stat and a JSON read), each the median of --repeats calls, with the ratio.
A chunked model is assembled once into a temporary cache dir first (not timed). The tests
check the behaviour (no digest is started on a stamped file); this prints the speed.

    .venv/bin/python benchmarks/model_file_stamp.py [--repeats 5] [--models smollm2-135m,...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from smcs_graph.models.local import (
    LOCAL_MODELS,
    LocalModelError,
    locate_parts,
    model_file,
    sha256_file,
)


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=",".join(LOCAL_MODELS))
    args = parser.parse_args()
    print(f"{'model':<24} {'size MB':>8} {'sha256 s':>10} {'stamped s':>10} {'ratio':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for name in args.models.split(","):
            try:
                locate_parts(name)
            except LocalModelError as exc:
                print(f"{name:<24} skipped: {exc}")
                continue
            path = model_file(name, cache)  # assembles / verifies and stamps (not timed)
            full = _median_seconds(lambda p=path: sha256_file(p), args.repeats)
            stamped = _median_seconds(lambda n=name: model_file(n, cache), args.repeats)
            size = path.stat().st_size / 1e6
            ratio = full / stamped if stamped > 0 else float("inf")
            print(f"{name:<24} {size:>8.0f} {full:>10.3f} {stamped:>10.5f} {ratio:>8.0f}x")


if __name__ == "__main__":
    main()
