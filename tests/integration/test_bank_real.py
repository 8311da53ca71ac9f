"""The bank with real parts: the MiniLM embedder, Chroma on disk (reopened in a new process),
and a `chroma run` server reached through HttpClient."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from smcs_graph.bank.store import BankQuestion, QuestionBank, Support
from smcs_graph.embedder import DEFAULT_MODEL_ID, SentenceTransformerEmbedder
from smcs_graph.errors import EmbedderMismatchError

pytestmark = pytest.mark.integration

CALCULUS = [
    "What is the derivative of x squared?",
    "Differentiate f(x) = x^2 with respect to x.",
    "Find the derivative of 3x^2 + 2x.",
    "Compute d/dx of sin(x).",
]
LITERATURE = [
    "Who wrote the play Hamlet?",
    "Which author wrote Pride and Prejudice?",
    "Name a tragedy written by Shakespeare.",
    "Who is the author of War and Peace?",
]
GEOGRAPHY = [
    "What is the capital of France?",
    "Which river flows through Cairo?",
    "What is the largest ocean on Earth?",
    "On which continent is Kenya?",
]


class VectorEmbedder:
    """Maps the text 'v<i>' to row i of a fixed matrix."""

    def __init__(self, vectors: NDArray[np.float64], id: str = "vectors-384") -> None:
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.id = id
        self.dimension = vectors.shape[1]

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = [int(t[1:]) for t in texts]
        return self.vectors[rows].astype(np.float32).reshape(len(rows), self.dimension)


def brute_force(
    vectors: NDArray[np.float64], query: NDArray[np.float64], n_sup_base: int, gamma: float
) -> tuple[NDArray[np.float64], set[int], float]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ (query / np.linalg.norm(query))
    ref = np.sort(sims)[::-1][min(n_sup_base, len(sims)) - 1]
    thr = gamma * ref
    return sims, {i for i in range(len(sims)) if sims[i] >= thr}, float(thr)


def check_against(
    support: Support, sims: NDArray[np.float64], members: set[int], thr: float
) -> None:
    got = {int(i[1:]) for i in support.question_ids}
    assert all(abs(sims[i] - thr) < 1e-5 for i in got ^ members), sorted(got ^ members)
    assert support.threshold == pytest.approx(thr, abs=1e-5)
    expected = np.array([sims[int(i[1:])] for i in support.question_ids])
    np.testing.assert_allclose(support.similarities, expected, atol=1e-5)
    assert np.all(np.diff(support.similarities) <= 1e-6)


def support_json(support: Support) -> dict[str, object]:
    return {
        "ids": support.question_ids,
        "sims": [round(float(s), 5) for s in support.similarities],
        "cap": support.capability.tolist(),
        "measured": support.measured.tolist(),
        "threshold": round(support.threshold, 5),
    }


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


# ---------------------------------------------------------------------- MiniLM


def test_minilm_embeds_normalized_384(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.id == DEFAULT_MODEL_ID
    assert minilm.dimension == 384
    out = minilm.embed([*CALCULUS[:2], ""])
    assert minilm.loaded
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(minilm.embed([CALCULUS[0]])[0], out[0], atol=1e-5)


def test_minilm_ranks_similar_questions_first(minilm: SentenceTransformerEmbedder) -> None:
    bank = minilm.embed(CALCULUS + LITERATURE + GEOGRAPHY)
    query = minilm.embed(["How do I take the derivative of x to the power of 2?"])[0]
    sims = bank @ query
    calculus, others = sims[: len(CALCULUS)], sims[len(CALCULUS) :]
    assert calculus[:2].min() > others.max()
    assert int(np.argmax(sims)) in (0, 1)
    query = minilm.embed(["Who wrote Romeo and Juliet?"])[0]
    sims = bank @ query
    assert int(np.argmax(sims)) in range(len(CALCULUS), len(CALCULUS) + len(LITERATURE))


def test_minilm_is_safe_from_threads(minilm: SentenceTransformerEmbedder) -> None:
    texts = CALCULUS + LITERATURE + GEOGRAPHY
    expected = minilm.embed(texts)
    results: dict[int, NDArray[np.float32]] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            results[k] = minilm.embed(texts)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for out in results.values():
        np.testing.assert_allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------------- on disk, new process

REOPEN = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from smcs_graph.bank.store import QuestionBank
    from smcs_graph.embedder import SentenceTransformerEmbedder

    path, query, models = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    emb = SentenceTransformerEmbedder()
    bank = QuestionBank.open(path, emb, create=False)

    def as_json(s):
        return {
            "ids": s.question_ids,
            "sims": [round(float(x), 5) for x in s.similarities],
            "cap": s.capability.tolist(),
            "measured": s.measured.tolist(),
            "threshold": round(s.threshold, 5),
        }

    q = np.asarray(query, dtype=np.float32)
    print(json.dumps({
        "len": len(bank),
        "ids": bank.question_ids(),
        "questions": [vars(x) for x in bank.get(bank.question_ids())],
        "models": bank.models,
        "coverage": bank.coverage(),
        "exact": as_json(bank.support(q, models, n_sup_base=4, gamma=0.9)),
        "model_loaded": emb.loaded,
    }))
    """
)


def test_disk_bank_survives_a_new_process(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    path = tmp_path / "bank"
    families = [("calculus", CALCULUS), ("literature", LITERATURE), ("geography", GEOGRAPHY)]
    questions = [
        BankQuestion(id=f"{fam}-{i}", question=q, family=fam, source="test", answer=str(i))
        for fam, items in families
        for i, q in enumerate(items)
    ]
    models = ["org/math-7b:q4.k-m", "lit.model-v1", "not-profiled"]
    query = minilm.embed(["What is the derivative of x cubed?"])[0]
    with QuestionBank.open(path, minilm) as bank:
        assert bank.add_questions(questions) == len(questions)
        bank.record_results(models[0], {q.id: q.family == "calculus" for q in questions})
        bank.record_results(models[1], {q.id: q.family == "literature" for q in questions[:8]})
        before = {
            "len": len(bank),
            "ids": bank.question_ids(),
            "questions": [vars(q) for q in questions],
            "models": bank.models,
            "coverage": bank.coverage(),
            "exact": support_json(bank.support(query, models, n_sup_base=4, gamma=0.9)),
        }
    top = before["exact"]["ids"][:2]  # type: ignore[index]
    assert all(id_.startswith("calculus-") for id_ in top), top
    out = subprocess.run(
        [sys.executable, "-c", REOPEN, str(path), json.dumps(query.tolist()), json.dumps(models)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    after = json.loads(out.stdout.strip().splitlines()[-1])
    assert after.pop("model_loaded") is False, "opening a bank must not load the model"
    assert after == before
    assert after["coverage"] == {models[1]: 8, models[0]: 12}


# ---------------------------------------------------------------------- Chroma server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    exe = Path(sys.executable).parent / "chroma"
    if not exe.exists():
        pytest.skip(f"the chroma console script is not installed at {exe}")
    data = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log_path = data.parent / f"chroma-{port}.log"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(exe), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited with {proc.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"chroma run gave no heartbeat in 60 s: {log_path.read_text()}")
            time.sleep(0.25)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def test_bank_on_a_chroma_server(chroma_server: tuple[str, int]) -> None:
    host, port = chroma_server
    n, dim = 1500, 384
    rng = np.random.default_rng(11)
    emb = VectorEmbedder(rng.standard_normal((n, dim)))
    bank = QuestionBank.connect(host, port, emb, name="server_bank")
    questions = [
        BankQuestion(id=f"q{i}", question=f"v{i}", family=("a", "b")[i % 2], answer="x")
        for i in range(n)
    ]
    assert bank.add_questions(questions) == n
    model = "Qwen/Qwen2.5-7B-Instruct:q4.k-m"
    outcomes = rng.random(n) < 0.4
    bank.record_results(model, {f"q{i}": bool(outcomes[i]) for i in range(n)})
    bank.record_results("other", {"q0": True, "q1": True})
    # An answer that changes (to None) drops q1's results, over HTTP too.
    assert bank.add_questions([BankQuestion(id="q1", question="v1", family="b")]) == 1
    assert bank.get(["q1"]) == [BankQuestion(id="q1", question="v1", family="b")]

    # A second client sees everything (all state lives on the server).
    reader = QuestionBank.from_settings({"host": host, "port": port, "name": "server_bank"}, emb)
    assert len(reader) == n
    assert reader.models == sorted([model, "other"])
    assert reader.coverage() == {model: n - 1, "other": 1}
    assert reader.info()["families"] == {"a": n // 2, "b": n // 2}

    for _ in range(3):
        query = rng.standard_normal(dim)
        sims, members, thr = brute_force(emb.vectors, query, 400, 0.95)
        support = reader.support(query, [model, "other", "absent"], n_sup_base=400, gamma=0.95)
        check_against(support, sims, members, thr)
        assert support.bank_size == n
        cols = [int(i[1:]) for i in support.question_ids]
        measured = [c != 1 for c in cols]
        np.testing.assert_array_equal(support.measured[0], measured)
        np.testing.assert_array_equal(support.capability[0], [outcomes[c] and c != 1 for c in cols])
        np.testing.assert_array_equal(support.measured[1], [c == 0 for c in cols])
        assert not support.measured[2].any()

    with pytest.raises(EmbedderMismatchError, match="vectors-384"):
        QuestionBank.connect(
            host, port, VectorEmbedder(emb.vectors, id="other"), name="server_bank"
        )


def test_graph_prior_selection_through_a_chroma_server(chroma_server: tuple[str, int]) -> None:
    """The team setup: the bank lives on a `chroma run` server, configured by host and port;
    the SMCS graph's select_priors retrieves through HttpClient with the real MiniLM."""
    from smcs_graph import Pool, SMCSConfig, build_graph
    from smcs_graph.embedder import default_embedder
    from smcs_graph.testing import FakeChatModel

    host, port = chroma_server
    settings = {"host": host, "port": port, "name": "graph_bank"}
    writer = QuestionBank.from_settings(settings, default_embedder())
    math_q = ["What is 7 times 8?", "Compute 12 plus 30.", "What is 81 divided by 9?"]
    geo_q = ["What is the capital of Peru?", "Which river flows through Cairo?"]
    writer.add_questions(
        [BankQuestion(id=f"m{i}", question=q, family="math") for i, q in enumerate(math_q)]
        + [BankQuestion(id=f"g{i}", question=q, family="geo") for i, q in enumerate(geo_q)]
    )
    writer.record_results("calc", {"m0": True, "m1": True, "m2": True, "g0": False, "g1": False})
    writer.record_results("atlas", {"m0": False, "m1": False, "m2": False, "g0": True, "g1": True})

    bank = QuestionBank.from_settings(settings, default_embedder())
    pool = Pool.from_chat_models(
        {"atlas": FakeChatModel(responses=["Lima"]), "calc": FakeChatModel(responses=["56"])}
    )
    config = SMCSConfig(k=2, n_aggregations=2, n_sup_base=3, seed=0)
    graph = build_graph(pool, bank, bank.embedder, config).compile()
    trace = graph.invoke({"question": "What is 9 times 6?"}, {"max_concurrency": 8})["trace"]
    assert trace["bank_size"] == 5 and trace["support_size"] >= 3
    assert trace["referencers"][0] == "calc" and trace["aggregator"] == "calc"
    assert trace["priors"]["calc"] > trace["priors"]["atlas"]
    assert all(example["id"].startswith("m") for example in trace["support_examples"][:3])
