"""Embedders: the hashing fake (deterministic, normalized) and the MiniLM wrapper's cheap paths."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from smcs_graph.embedder import (
    DEFAULT_MODEL_ID,
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    default_embedder,
)
from smcs_graph.errors import ConfigError


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


class TestHashingEmbedder:
    def test_shape_dtype_and_unit_rows(self) -> None:
        emb = HashingEmbedder(dimension=32)
        out = emb.embed(["What is 2 plus 2?", "Who wrote Hamlet?", "x"])
        assert out.shape == (3, 32)
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)

    def test_satisfies_the_protocol(self) -> None:
        assert isinstance(HashingEmbedder(), Embedder)

    def test_deterministic_across_instances(self) -> None:
        a = HashingEmbedder(dimension=16).embed(["the same text"])
        b = HashingEmbedder(dimension=16).embed(["the same text"])
        np.testing.assert_array_equal(a, b)

    def test_deterministic_across_processes(self) -> None:
        # Python's hash() is salted per process; blake2b is not.
        code = textwrap.dedent(
            """
            from smcs_graph.embedder import HashingEmbedder
            print(HashingEmbedder(dimension=16).embed(["stable hashing please"]).tolist())
            """
        )
        outs = [
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": seed},
            ).stdout
            for seed in ("1", "2")
        ]
        assert outs[0] == outs[1]
        local = HashingEmbedder(dimension=16).embed(["stable hashing please"])
        np.testing.assert_allclose(np.array(eval(outs[0])), local, rtol=1e-6)

    def test_shared_words_mean_similar_vectors(self) -> None:
        emb = HashingEmbedder(dimension=256)
        base, near, far = emb.embed(
            [
                "what is the derivative of x squared",
                "compute the derivative of x squared please",
                "which empire built machu picchu",
            ]
        )
        assert _cos(base, near) > _cos(base, far) + 0.3

    def test_case_and_punctuation_do_not_matter(self) -> None:
        emb = HashingEmbedder()
        a, b = emb.embed(["Hello, World!", "hello world"])
        np.testing.assert_allclose(a, b)

    def test_empty_text_gives_a_fixed_unit_vector(self) -> None:
        emb = HashingEmbedder(dimension=8)
        out = emb.embed(["", "   ", "!!! ???"])
        assert np.isfinite(out).all()
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_array_equal(out[0], out[2])

    def test_never_nan_even_when_signed_hashes_cancel(self) -> None:
        emb = HashingEmbedder(dimension=1)  # every token lands in one bucket, +1 or -1
        out = emb.embed([" ".join(f"w{i}" for i in range(50)), "a b", "a a"])
        assert np.isfinite(out).all()
        np.testing.assert_allclose(np.abs(out), 1.0)

    def test_empty_batch(self) -> None:
        out = HashingEmbedder(dimension=12).embed([])
        assert out.shape == (0, 12)
        assert out.dtype == np.float32

    def test_rejects_a_bare_string_and_non_strings(self) -> None:
        emb = HashingEmbedder()
        with pytest.raises(TypeError, match="wrap a single text"):
            emb.embed("oops")
        with pytest.raises(TypeError, match="item 1"):
            emb.embed(["ok", 3])  # type: ignore[list-item]

    def test_id_names_the_dimension_and_can_be_set(self) -> None:
        assert HashingEmbedder(dimension=64).id != HashingEmbedder(dimension=32).id
        assert HashingEmbedder(dimension=8, id="fake").id == "fake"

    def test_bad_dimension(self) -> None:
        with pytest.raises(ConfigError, match="dimension"):
            HashingEmbedder(dimension=0)


class TestSentenceTransformerEmbedderCheapPaths:
    """What works without loading the model (the real model runs in integration tests)."""

    def test_missing_folder_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not found") as info:
            SentenceTransformerEmbedder(tmp_path / "nope")
        assert "local folders" in str(info.value)

    def test_hub_style_name_is_not_downloaded(self) -> None:
        with pytest.raises(ConfigError, match="nothing is downloaded"):
            SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2-not-a-folder")

    def test_default_id_and_dimension_without_loading(self) -> None:
        emb = SentenceTransformerEmbedder()
        assert emb.id == DEFAULT_MODEL_ID
        assert emb.dimension == 384
        out = emb.embed([])
        assert out.shape == (0, 384)
        assert not emb.loaded
        assert isinstance(emb, Embedder)

    def test_custom_folder_id(self, tmp_path: Path) -> None:
        folder = tmp_path / "my-model"
        folder.mkdir()
        assert SentenceTransformerEmbedder(folder).id == "my-model"
        assert SentenceTransformerEmbedder(folder, model_id="org/model").id == "org/model"

    def test_bad_batch_size(self) -> None:
        with pytest.raises(ConfigError, match="batch_size"):
            SentenceTransformerEmbedder(batch_size=0)

    def test_default_embedder_is_shared(self) -> None:
        assert default_embedder() is default_embedder()
        assert default_embedder().id == DEFAULT_MODEL_ID


def test_import_is_light_and_offline() -> None:
    code = textwrap.dedent(
        """
        import os, sys
        os.environ.pop("HF_HUB_OFFLINE", None)
        import smcs_graph.embedder as e
        e.SentenceTransformerEmbedder().dimension
        assert "sentence_transformers" not in sys.modules, "imported eagerly"
        assert "torch" not in sys.modules, "imported eagerly"
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
