"""Question sources: one record type for every family, loaders, prompts and bank/test splits.

Read top to bottom, as a question flows:

- `records`: `QuestionRecord` (one type for every family, validated), its JSON form, and
  `prompt_for`, the model-facing prompt with the family's answer-format instruction;
- `files`: the rows of any JSON/JSONL file (gzipped too), and our own records JSONL
  (`load_records`, `save_records`);
- `loaders`: the public benchmark formats (MMLU-Pro, MedMCQA, ARC, MATH-500, GSM8K, MBPP,
  IFEval, HumanEval) from files or the Hugging Face Hub; a file's format is detected from its
  fields (`detect_format`), the file name only a hint;
- `matrix`: recorded results, a CSV correctness matrix, and how its ids meet the questions;
- `splits`: seeded bank/test splits, stratified by `category_of`.

The question file every command reads (`bank build`, `bank import`, `replay`) is described
once, in `QUESTION_FILE_HELP`; a question's category is `category_of` (`CATEGORY_RULE`).
"""

from smcs_graph.questions.files import load_records, read_rows, save_records
from smcs_graph.questions.loaders import (
    QUESTION_FILE_HELP,
    QUESTION_FORMATS,
    detect_format,
    load_arc,
    load_benchmark,
    load_gsm8k,
    load_huggingface,
    load_humaneval,
    load_ifeval,
    load_math500,
    load_mbpp,
    load_medmcqa,
    load_mmlu_pro,
)
from smcs_graph.questions.matrix import (
    ID_COLUMN_HELP,
    CorrectnessMatrix,
    JoinKey,
    join_matrix,
    native_id,
    read_matrix,
)
from smcs_graph.questions.records import (
    CATEGORY_RULE,
    FAMILIES,
    LETTERS,
    QuestionFormatError,
    QuestionRecord,
    category_of,
    prompt_for,
)
from smcs_graph.questions.splits import split_bank_test

__all__ = [
    "CATEGORY_RULE",
    "FAMILIES",
    "ID_COLUMN_HELP",
    "LETTERS",
    "QUESTION_FILE_HELP",
    "QUESTION_FORMATS",
    "CorrectnessMatrix",
    "JoinKey",
    "QuestionFormatError",
    "QuestionRecord",
    "category_of",
    "detect_format",
    "join_matrix",
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
    "native_id",
    "prompt_for",
    "read_matrix",
    "read_rows",
    "save_records",
    "split_bank_test",
]
