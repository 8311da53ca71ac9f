"""Shared by the examples: the embedded local pool and a small starter bank profiled on it.

The starter bank is `data/starter_bank.jsonl` (questions written for these examples, with
exact answers). The first run asks every local model every question once, grades the answers
with simple exact-match graders, and records the results in a Chroma bank on disk; later runs
reuse it. (`smcs profile` and the default bank replace this for real use.)
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from smcs_graph import BankQuestion, Pool, QuestionBank, SentenceTransformerEmbedder, SMCSConfig
from smcs_graph.models.pool import load_pool_file

HERE = Path(__file__).parent
STARTER_BANK = HERE / "data" / "starter_bank.jsonl"
LOCAL_POOL = HERE / "local_pool.yaml"
CACHE = Path(os.environ.get("SMCS_CACHE_DIR") or Path.home() / ".cache" / "smcs-graph")


def grade(kind: str, gold: str, answer: str) -> bool:
    """Exact-match graders for the starter bank: a number, a letter, or a word."""
    if kind == "number":
        numbers = re.findall(r"-?\d+(?:\.\d+)?", answer.replace(",", ""))
        return bool(numbers) and float(numbers[-1]) == float(gold)
    if kind == "letter":
        match = re.search(r"answer is \(?([A-D])\)?", answer) or re.search(
            r"^\s*\(?([A-D])\)?[.)]?\s*$", answer, re.MULTILINE
        )
        return bool(match) and match.group(1) == gold
    return re.search(rf"\b{re.escape(gold.lower())}\b", answer.lower()) is not None


def local_pool() -> tuple[Pool, SMCSConfig]:
    """The local pool and the settings that fit it, from `local_pool.yaml`."""
    return load_pool_file(LOCAL_POOL)


def starter_bank(pool: Pool, *, verbose: bool = True) -> QuestionBank:
    """The starter bank on disk, with every pool model profiled on it (once)."""
    rows = [json.loads(line) for line in STARTER_BANK.read_text().splitlines() if line.strip()]
    bank = QuestionBank.open(CACHE / "starter-bank", SentenceTransformerEmbedder())
    if len(bank) < len(rows):
        bank.add_questions(
            [
                BankQuestion(
                    id=r["id"], question=r["question"], family=r["family"], answer=r["answer"]
                )
                for r in rows
            ]
        )
    coverage = bank.coverage()
    for member in pool:
        if coverage.get(member.name, 0) >= len(rows):
            continue
        if verbose:
            print(f"profiling {member.name} on {len(rows)} starter questions (once)...")

        def ask(row: dict[str, Any], chat: Any = member.chat_model) -> bool:
            reply = chat.invoke(row["question"], temperature=0.0, max_tokens=48)
            return grade(row["grader"], row["answer"], str(reply.content))

        with ThreadPoolExecutor(max_workers=4) as executor:
            verdicts = list(executor.map(ask, rows))
        bank.record_results(member.name, {r["id"]: v for r, v in zip(rows, verdicts, strict=True)})
        if verbose:
            print(f"  {member.name}: {sum(verdicts)}/{len(rows)} correct")
    return bank
