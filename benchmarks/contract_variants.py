"""Multiple-choice answer-contract variants, side by side on the default bank's BANK split only.

Asks one local model (default Qwen2.5-Coder-1.5B, greedy) 24 seeded multiple-choice bank
questions under two wordings: chain of thought then "The answer is (X)" at 256 tokens, and the
answer line first then a short justification at 64 tokens (the contract in
`smcs_graph/answers.py`). A reply cut off before its letter is finished by the recovery
follow-up. Prints, per variant: questions, replies at the limit, replies still without a letter,
right answers, output tokens. The test split is never read.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/contract_variants.py [model] [questions]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

import httpx

from smcs_graph.embedded.default_bank import default_bank_records, default_split
from smcs_graph.grading import grade
from smcs_graph.grading.multiple_choice import extract_letter
from smcs_graph.models.local.manager import get_local_servers
from smcs_graph.questions import LETTERS, QuestionRecord

PREFIX = "\n\nThe answer is ("


def _options(record: QuestionRecord) -> str:
    return "\n".join(f"({letter}) {c}" for letter, c in zip(LETTERS, record.choices, strict=False))


def _cot(record: QuestionRecord) -> str:
    return (
        f"{record.question}\n\nOptions:\n{_options(record)}\n\nThink it through briefly, then "
        'finish with the line "The answer is (X)", where X is the letter of the correct option.'
    )


def _first(record: QuestionRecord) -> str:
    return (
        f"{record.question}\n\nOptions:\n{_options(record)}\n\nReply with the line "
        '"The answer is (X)", where X is the letter of the correct option, first; then justify '
        "it in one or two sentences."
    )


VARIANTS: dict[str, tuple[Callable[[QuestionRecord], str], int]] = {
    "cot256": (_cot, 256),
    "first64": (_first, 64),
}


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-1.5b"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    bank, _ = default_split(default_bank_records())
    questions = [r for r in bank if r.family == "multiple_choice"]
    random.Random(0).shuffle(questions)
    base = get_local_servers().ensure([model], threads=1)[model].rstrip("/")

    def call(messages: list[dict[str, str]], limit: int) -> tuple[str, str, int]:
        body = {"messages": messages, "max_tokens": limit, "temperature": 0, "seed": 0}
        reply = httpx.post(base + "/chat/completions", json=body, timeout=600).json()
        choice = reply["choices"][0]
        return (
            choice["message"]["content"],
            choice["finish_reason"],
            reply["usage"]["completion_tokens"],
        )

    totals = {name: [0, 0, 0, 0, 0] for name in VARIANTS}  # n, cut, no letter, right, tokens
    for record in questions[:count]:
        for name, (prompt_of, limit) in VARIANTS.items():
            prompt, started = prompt_of(record), time.perf_counter()
            text, finish, tokens = call([{"role": "user", "content": prompt}], limit)
            final = text
            if finish == "length" and extract_letter(text, "ABCD")[0] is None:
                prefilled = text + PREFIX
                turns = [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": prefilled},
                ]
                more, _, extra = call(turns, 4)
                final = prefilled + (more[len(prefilled) :] if more.startswith(prefilled) else more)
                tokens += extra
            row = totals[name]
            row[0] += 1
            row[1] += finish == "length"
            row[2] += extract_letter(final, "ABCD")[0] is None
            row[3] += bool(grade(record, final).correct)
            row[4] += tokens
            seconds = time.perf_counter() - started
            print(name, record.id, finish, f"{seconds:.1f}s", "|", *row, flush=True)
    print("variant     questions  at limit  no letter  right  output tokens/question")
    for name, (n, cut, missing, right, tokens) in totals.items():
        print(f"{name:<10} {n:>10} {cut:>9} {missing:>10} {right:>6} {tokens / max(n, 1):>10.0f}")


if __name__ == "__main__":
    main()
