"""Generated reasoning tasks (`reasoning-gym`): the generator's own scorer, counting only 1.0.

A record's id is ``rg/<dataset>/<seed>/<index>``. The grader regenerates that item with the
project's settings for the dataset (`DATASET_SETTINGS`, the ones the default bank was generated
with), checks that it is the question asked, and scores the extracted answer with the dataset's
own `score_answer`. Partial credit (e.g. 0.5 for factors whose product is right) counts as wrong.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from smcs_graph.grading import Verdict
from smcs_graph.questions import QuestionRecord

__all__ = [
    "ANSWER_INSTRUCTION",
    "DATASET_SETTINGS",
    "DATASET_SIZE",
    "extract_answer",
    "generated_entry",
    "grade_reasoning_gym",
    "item_id",
    "parse_item_id",
    "question_text",
]

DATASET_SIZE = 1000
"""The `size` every dataset is created with (an item's index must be below it)."""

# Small numbers and short lists: the local pool's models are 135M to 1.5B parameters.
DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "chain_sum": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "gcd": {"min_value": 2, "max_value": 100},
    "lcm": {"min_value": 2, "max_value": 30},
    "simple_equations": {"min_terms": 2, "max_terms": 3, "min_value": 1, "max_value": 20},
    "leg_counting": {"min_animals": 2, "max_animals": 3, "max_instances": 5},
    "letter_counting": {"min_words": 3, "max_words": 6},
    "spell_backward": {"min_word_len": 3, "max_word_len": 6},
    "word_sorting": {"min_words": 3, "max_words": 5},
    "fraction_simplification": {"max_value": 50, "max_factor": 10, "styles": ("plain",)},
}

# No placeholder ("Answer: X"): the smallest models copy it verbatim.
ANSWER_INSTRUCTION = 'Give your final answer alone on the last line, after "Answer:".'

_ID = re.compile(r"^rg/([a-z0-9_]+)/(\d+)/(\d+)$")
_TAGGED = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_STATED = re.compile(r"\banswer\s*(?:is|:)\s*:?[ \t]*([^\n]+)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MAX_BARE_ANSWER = 200
_lock = threading.Lock()


def item_id(dataset: str, seed: int, index: int) -> str:
    """The stable question id of item `index` of `dataset` generated with `seed`."""
    return f"rg/{dataset}/{seed}/{index}"


def parse_item_id(identifier: str) -> tuple[str, int, int]:
    """(dataset, seed, index) of a reasoning-gym question id; a clear error otherwise."""
    match = _ID.match(identifier)
    if match is None:
        raise ValueError(
            f"reasoning-gym question id {identifier!r} is not of the form "
            "'rg/<dataset>/<seed>/<index>'"
        )
    dataset, seed, index = match.group(1), int(match.group(2)), int(match.group(3))
    if dataset not in DATASET_SETTINGS:
        raise ValueError(
            f"reasoning-gym question {identifier!r}: no settings for dataset {dataset!r}; "
            f"known: {', '.join(sorted(DATASET_SETTINGS))}"
        )
    if index >= DATASET_SIZE:
        raise ValueError(
            f"reasoning-gym question {identifier!r}: index {index} is not below {DATASET_SIZE}"
        )
    return dataset, seed, index


@functools.cache
def _dataset(name: str, seed: int) -> Any:
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ImportError(
            "reasoning-gym questions need the 'reasoning-gym' package: pip install reasoning-gym"
        ) from exc
    return reasoning_gym.create_dataset(
        name, seed=seed, size=DATASET_SIZE, **DATASET_SETTINGS[name]
    )


def generated_entry(dataset: str, seed: int, index: int) -> dict[str, Any]:
    """The generator's item (question, answer, metadata); the same on every run."""
    with _lock:  # datasets are built once; building one is not thread-safe
        generator = _dataset(dataset, seed)
    return dict(generator[index])


def question_text(entry: dict[str, Any]) -> str:
    """The question as asked: the generator's text and how to state the answer."""
    return f"{str(entry['question']).rstrip()}\n\n{ANSWER_INSTRUCTION}"


def _clean(answer: str) -> str:
    # "**Friday**.", "$\\boxed{12}$", "'ainomma'" -> the bare answer
    answer = answer.strip().removesuffix(".").strip("*_`$ \t").removesuffix(".").strip()
    if len(answer) > 1 and answer[0] == answer[-1] and answer[0] in "\"'":
        answer = answer[1:-1].strip()
    boxed = _BOXED.fullmatch(answer)
    return boxed.group(1).strip() if boxed else answer


def extract_answer(response: str) -> str | None:
    """The last <answer>...</answer>, else the last 'Answer: X' / 'answer is X', else a short
    last line; None if there is none of these."""
    tagged = _TAGGED.findall(response)
    if tagged:
        return _clean(tagged[-1])
    stated = _STATED.findall(response)
    if stated:
        return _clean(stated[-1])
    lines = [line for line in response.strip().splitlines() if line.strip()]
    # A long last line is prose, not an answer given alone.
    return _clean(lines[-1]) if lines and len(lines[-1]) <= _MAX_BARE_ANSWER else None


def grade_reasoning_gym(record: QuestionRecord, response: str) -> Verdict:
    """Correct when the dataset's own scorer gives the extracted answer a full 1.0."""
    dataset, seed, index = parse_item_id(record.id)
    entry = generated_entry(dataset, seed, index)
    if question_text(entry) != record.question:
        raise ValueError(
            f"reasoning-gym question {record.id!r} differs from the item the generator makes "
            "now (another reasoning-gym version or other settings): regenerate the questions "
            "or install the reasoning-gym version in pyproject.toml"
        )
    extracted = extract_answer(response)
    if not extracted:
        return Verdict(correct=False, detail="no answer found")
    generator = _dataset(dataset, seed)
    score = float(generator.score_answer(extracted, entry))
    correct = score == 1.0
    detail = "" if correct else f"score {score:g} (only 1.0 counts), gold is {entry['answer']}"
    return Verdict(correct=correct, extracted=extracted, detail=detail)
