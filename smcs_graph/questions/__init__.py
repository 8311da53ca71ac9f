"""Question sources: one record type for every family, loaders, prompts and bank/test splits.

Read top to bottom, as a question flows:

- `records`: `QuestionRecord` (one type for every family, validated), its JSON form, and
  `prompt_for`, the model-facing prompt with the family's answer-format instruction;
- `files`: the rows of any JSON/JSONL file (gzipped too), and our own record JSONL
  (`load_records`, `save_records`);
- `loaders`: the public benchmark formats (MMLU-Pro, MedMCQA, ARC, MATH-500, GSM8K, MBPP,
  IFEval, HumanEval) from files or the Hugging Face Hub, recognised by name or fields;
- `splits`: seeded, stratified bank/test splits.
"""

from smcs_graph.questions.files import load_records, save_records
from smcs_graph.questions.loaders import (
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
from smcs_graph.questions.records import (
    FAMILIES,
    LETTERS,
    QuestionFormatError,
    QuestionRecord,
    prompt_for,
)
from smcs_graph.questions.splits import split_bank_test

__all__ = [
    "FAMILIES",
    "LETTERS",
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
