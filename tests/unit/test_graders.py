"""Graders on hand-made questions: right and wrong answers, and tricky extraction cases."""

from __future__ import annotations

import threading

import pytest

from smcs_graph.grading import Verdict, get_grader, grade, known_families, register_grader
from smcs_graph.grading.code import extract_code, make_code_grader
from smcs_graph.questions import QuestionRecord

pytestmark = pytest.mark.timeout(120)

MC = QuestionRecord(
    id="mc/1",
    family="multiple_choice",
    question="Which gas do plants take in for photosynthesis?",
    choices=("Oxygen", "Nitrogen", "Carbon dioxide", "Helium"),
    answer="C",
)


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("Plants use CO2. The answer is (C).", "C"),
        ("The answer is C", "C"),
        ("Answer: C", "C"),
        ("answer is (c)", "C"),
        ("Final answer: **C**", "C"),
        ("The correct option is [C] because ...", "C"),
        ("It must be carbon dioxide.\n(C)", "C"),
        ("Reasoning...\n\nC", "C"),
        ("$\\boxed{C}$", "C"),
        ("At first the answer is (A)... no wait, the answer is (C).", "C"),
        ("The answer is A.", "A"),
        ("The answer is (B).", "B"),
    ],
)
def test_letter_extraction(response: str, letter: str) -> None:
    verdict = grade(MC, response)
    assert verdict.extracted == letter
    assert verdict.correct is (letter == "C")


@pytest.mark.parametrize(
    "response",
    [
        "I think it is carbon dioxide.",
        "The answer is a bit tricky: I would say carbon dioxide.",
        "",
        "Options A and C both look plausible, I cannot decide.",
        # a reply cut off while it walks through the options commits to none of them
        "Let's analyze each option:\n\n(C) Carbon dioxide is",
        "Option (C) is wrong because it is a gas",
    ],
)
def test_no_letter_is_never_guessed(response: str) -> None:
    verdict = grade(MC, response)
    assert not verdict.correct
    assert verdict.extracted is None
    assert verdict.detail == "no answer letter found"


def test_a_letter_outside_the_options_is_wrong() -> None:
    verdict = grade(MC, "The answer is (F).")
    assert not verdict.correct
    assert verdict.detail == "letter F is not among the options A-D"


MATH = QuestionRecord(id="m/1", family="math", question="Compute 1/2 + 1/4.", answer="\\frac{3}{4}")


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        ("1/2 + 1/4 = 3/4, so \\boxed{\\frac{3}{4}}.", True),
        ("The sum is \\boxed{0.75}", True),
        ("First \\boxed{1}, then corrected: \\boxed{\\dfrac{3}{4}}", True),
        ("The final answer is $\\frac{3}{4}$.", True),
        ("\\boxed{\\frac{2}{3}}", False),
        ("The result is 3/4 I think", False),  # no boxed and no stated final answer
    ],
)
def test_math_equivalence(response: str, correct: bool) -> None:
    assert grade(MATH, response).correct is correct


def test_math_in_a_worker_thread() -> None:
    """math-verify's signal-based timeouts cannot run off the main thread; ours skip them."""
    record = QuestionRecord(
        id="m/2", family="math", question="Roots?", answer="\\left( 3, \\frac{\\pi}{2} \\right)"
    )
    results: list[Verdict] = []
    worker = threading.Thread(
        target=lambda: results.append(grade(record, "\\boxed{(3, \\pi/2)}")), daemon=True
    )
    worker.start()
    worker.join(60)
    assert results and results[0].correct


def test_math_grading_outlives_the_threads_that_started_its_workers() -> None:
    """Workers started from a thread die with it; a later pool of threads still grades right
    (profiling and eval each grade from a fresh thread pool, several times per process)."""
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(3):
        with ThreadPoolExecutor(2) as threads:
            verdicts = list(threads.map(lambda r: grade(MATH, r), ["\\boxed{3/4}", "\\boxed{3}"]))
        assert [v.correct for v in verdicts] == [True, False], [v.detail for v in verdicts]


def test_a_math_answer_that_never_finishes_is_graded_wrong_and_its_worker_replaced() -> None:
    from smcs_graph.grading import math_answer

    grade_quickly = math_answer.make_math_grader(timeout_s=3)
    assert grade_quickly(MATH, "\\boxed{0.75}").correct  # a worker is up and warm
    killed_before = math_answer.killed_workers()
    verdict = grade_quickly(MATH, "\\boxed{(10^{8})!}")
    assert not verdict.correct
    assert verdict.detail == "math checking timed out after 3s"
    assert math_answer.killed_workers() == killed_before + 1
    # a fresh worker takes over
    assert grade_quickly(MATH, "\\boxed{\\frac{3}{4}}").correct
    assert not grade_quickly(MATH, "\\boxed{\\frac{2}{3}}").correct


def test_math_without_a_final_answer_says_so() -> None:
    verdict = grade(MATH, "Let me think about fractions.")
    assert not verdict.correct and "no final answer" in verdict.detail


NUMERIC = QuestionRecord(id="n/1", family="numeric", question="Cost?", answer="1250")


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        ("5 items at $250 each. The answer is 1,250.", True),
        ("The answer is $1250.00", True),
        ("So she pays 1250 dollars", True),
        ("#### 1250", True),
        ("The answer is 1250 dollars, not 1000.", True),
        ("The answer is 1,200.", False),
        ("The answer is 1250. Check: 1250 - 250 = 1000", True),  # stated answer wins
        ("She pays 1000 first and 250 later.", False),  # last number is 250
    ],
)
def test_numeric_final_number(response: str, correct: bool) -> None:
    assert grade(NUMERIC, response).correct is correct


def test_numeric_without_a_number() -> None:
    verdict = grade(NUMERIC, "I do not know.")
    assert not verdict.correct and verdict.detail == "no final number found"


MBPP_LIKE = QuestionRecord(
    id="code/1",
    family="code",
    question="Write add(a, b).",
    tests="assert add(2, 3) == 5\nassert add(-1, 1) == 0\n",
)
HUMANEVAL_LIKE = QuestionRecord(
    id="code/2",
    family="code",
    question='from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n',
    tests=(
        "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"
    ),
    entry_point="total",
)


def test_code_right_and_wrong() -> None:
    right = grade(MBPP_LIKE, "Here:\n```python\ndef add(a, b):\n    return a + b\n```")
    assert right.correct and right.detail == "all tests passed"
    wrong = grade(MBPP_LIKE, "```python\ndef add(a, b):\n    return a - b\n```")
    assert not wrong.correct and "AssertionError" in wrong.detail
    broken = grade(MBPP_LIKE, "```python\ndef add(a, b)\n    return a + b\n```")
    assert not broken.correct and "SyntaxError" in broken.detail


def test_code_humaneval_body_or_full_function() -> None:
    assert grade(HUMANEVAL_LIKE, "    return sum(xs)\n").correct
    full = "```python\ndef total(xs):\n    return sum(xs)\n```"
    assert grade(HUMANEVAL_LIKE, full).correct
    assert not grade(HUMANEVAL_LIKE, "```python\ndef total(xs):\n    return 3\n```").correct


def test_code_main_block_does_not_run() -> None:
    response = (
        "```python\ndef add(a, b):\n    return a + b\n\n"
        "if __name__ == '__main__':\n    print(add(int(input()), 1))\n```"
    )
    assert grade(MBPP_LIKE, response).correct


def test_code_hostile_answer_is_a_failure() -> None:
    grade_quickly = make_code_grader(timeout_s=1)
    verdict = grade_quickly(MBPP_LIKE, "```python\nwhile True:\n    pass\n```")
    assert not verdict.correct
    assert verdict.detail in ("timeout after 1s", "stopped by the cpu limit: exited with an error")


@pytest.mark.parametrize(
    "forgery",
    [
        "exit()",
        "sys.exit(0)",
        "os._exit(0)",
        "atexit.register(os._exit, 0)",
        "raise SystemExit(0)",
    ],
)
def test_an_early_exit_cannot_forge_a_pass(forgery: str) -> None:
    wrong = f"import atexit, os, sys\n\ndef add(a, b):\n    return a - b\n\n{forgery}\n"
    verdict = grade(MBPP_LIKE, f"```python\n{wrong}```")
    assert not verdict.correct, verdict.detail
    # the same exit inside the function the tests call
    body = f"import atexit, os, sys\n\ndef add(a, b):\n    {forgery}\n"
    assert not grade(MBPP_LIKE, f"```python\n{body}```").correct


def test_printed_or_written_verdicts_cannot_forge_a_pass() -> None:
    forger = (
        "import os, sys\n\ndef add(a, b):\n    return 0\n\n"
        "print('all tests passed')\n"
        "print('all tests passed', file=sys.stderr)\n"
        "for fd in range(3, 64):\n"
        "    for text in (b'all tests passed\\n', b'0' * 32, b'passed'):\n"
        "        try:\n"
        "            os.write(fd, text)\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n"
    )
    verdict = grade(MBPP_LIKE, f"```python\n{forger}```")
    assert not verdict.correct, verdict.detail
    assert "before the tests finished" in verdict.detail


def test_a_correct_solution_that_prints_and_exits_cleanly_still_passes() -> None:
    response = (
        "```python\nimport sys\n\ndef add(a, b):\n    print('adding', a, b)\n"
        "    return a + b\n\nprint('ready', file=sys.stderr)\n```"
    )
    verdict = grade(MBPP_LIKE, response)
    assert verdict.correct, verdict.detail


def test_code_extraction_picks_the_solution_block() -> None:
    response = (
        "Example:\n```\nprint(total([1]))\n```\nSolution:\n```python\n"
        "def total(xs):\n    return sum(xs)\n```\nUsage:\n```python\ntotal([2])\n```"
    )
    assert extract_code(response, "total").startswith("def total")
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"


INSTRUCTION = QuestionRecord(
    id="if/1",
    family="instruction",
    question="Describe a cat in lowercase letters, in at least 8 words, with no commas.",
    constraints=(
        {"id": "change_case:english_lowercase", "kwargs": {}},
        {
            "id": "length_constraints:number_words",
            "kwargs": {"relation": "at least", "num_words": 8},
        },
        {"id": "punctuation:no_comma", "kwargs": {}},
    ),
)


def test_instruction_constraints() -> None:
    good = "a cat is a small soft animal that loves to sleep in the sun all day long."
    assert grade(INSTRUCTION, good).correct
    shouting = good.upper()
    verdict = grade(INSTRUCTION, shouting)
    assert not verdict.correct and "change_case:english_lowercase" in verdict.detail
    comma = "a cat is small, soft and loves to sleep in the warm sun all day."
    assert "punctuation:no_comma" in grade(INSTRUCTION, comma).detail
    short = "a cat sleeps."
    assert "length_constraints:number_words" in grade(INSTRUCTION, short).detail


def test_instruction_sentences_are_counted_offline() -> None:
    record = QuestionRecord(
        id="if/2",
        family="instruction",
        question="Answer in fewer than 3 sentences.",
        constraints=(
            {
                "id": "length_constraints:number_sentences",
                "kwargs": {"relation": "less than", "num_sentences": 3},
            },
        ),
    )
    assert grade(record, "Dr. Smith went home. He was tired.").correct
    assert not grade(record, "One. Two. Three. Four.").correct


def test_unknown_constraint_is_a_clear_error() -> None:
    record = QuestionRecord(
        id="if/3", family="instruction", question="q", constraints=({"id": "made:up"},)
    )
    with pytest.raises(ValueError, match="unknown constraint ids \\['made:up'\\]"):
        grade(record, "anything")


def test_custom_grader_and_unknown_family() -> None:
    def exact(record: QuestionRecord, response: str) -> Verdict:
        return Verdict(correct=response.strip() == record.answer, extracted=response.strip())

    register_grader("exact_text", exact)
    record = QuestionRecord(id="e/1", family="exact_text", question="Say yes.", answer="yes")
    assert grade(record, " yes ").correct
    assert not grade(record, "no").correct
    assert "exact_text" in known_families()
    with pytest.raises(KeyError, match=r"known families: .*multiple_choice"):
        get_grader("poetry")
    with pytest.raises(TypeError, match="must be a callable"):
        register_grader("poetry", "not callable")  # type: ignore[arg-type]
    register_grader("bad", lambda record, response: True)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not a Verdict"):
        grade(QuestionRecord(id="b", family="bad", question="q"), "r")


def test_a_math_side_that_misses_its_parsing_limit_is_parsed_once_more_with_a_longer_one() -> None:
    """math-verify's limits are wall-clock alarms: on a busy machine "46" can miss a 5 s one,
    which used to raise "cannot parse the gold answer" or grade a right answer wrong."""
    from smcs_graph.grading import _math_worker

    limits: list[int] = []

    def parse(text: str, parsing_timeout: int) -> list[str]:
        limits.append(parsing_timeout)
        return [text] if parsing_timeout > 5 else []  # the first try runs out of time

    reply = _math_worker._check(
        parse, lambda gold, predicted, timeout_seconds: gold == predicted,
        {"gold": "46", "answer": "46", "timeout_s": 5},
    )  # fmt: skip
    assert reply == {"gold": True, "predicted": True, "correct": True}
    assert limits == [5, 5 * _math_worker.RETRY_FACTOR] * 2


_FIRST_USE_IN_THREADS = r"""
import sys, threading
from smcs_graph.grading import grade
from smcs_graph.questions import QuestionRecord

record = QuestionRecord(
    id="if/kn",
    family="instruction",
    question="Answer in Kannada only.",
    constraints=({"id": "language:response_language", "kwargs": {"language": "kn"}},),
)
hindi = "यह उत्तर हिंदी में लिखा गया है, कन्नड़ में नहीं। " * 4
verdicts = []
start = threading.Barrier(8)

def run():
    start.wait()
    verdicts.append(grade(record, hindi).correct)

threads = [threading.Thread(target=run) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(verdicts)
sys.exit(0 if verdicts == [False] * 8 else 1)
"""


def test_language_checks_graded_at_once_in_threads_agree_with_one_at_a_time() -> None:
    """The first instruction gradings of a process, in 8 threads at once (as `smcs eval`
    grades): a Hindi reply to "answer in Kannada" fails in every one. langdetect loads its
    profiles on first use, and a thread that came during the load used to get an error that
    IFEval's checker counts as "followed"."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("if_verifiable") is None:
        pytest.skip("the IFEval checkers (if-verifiable) are not installed")
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_USE_IN_THREADS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
