"""Profiling with per-model prompts: a pool entry's prompt change re-asks only its cells (and
only the changed family's, for a template), counted on scripted models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import BaseMessage

from smcs_graph import Pool, PoolModel, QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.models.prompts import prompt_digest
from smcs_graph.offline.profiling import (
    GenerationSettings,
    PromptRecord,
    profile_pool,
    question_key,
)
from smcs_graph.questions import QuestionRecord
from smcs_graph.testing import FakeChatModel
from tests.unit.test_profiling import answering, mc_records, new_bank

MATH = [
    QuestionRecord(id=f"m/{i}", family="math", question=f"What is {i} + {i}?", answer=str(2 * i))
    for i in range(4)
]
RECORDS = [*mc_records(6), *MATH]
N_MC, N_MATH = 6, len(MATH)


def pool_of(fakes: dict[str, FakeChatModel], **prompts: dict[str, Any]) -> Pool:
    """A pool of `fakes`; `prompts[name]` sets that entry's system_prompt / templates."""
    return Pool([PoolModel(name=n, chat_model=f, **prompts.get(n, {})) for n, f in fakes.items()])


def fresh() -> dict[str, FakeChatModel]:
    return {"alpha": answering("alpha"), "beta": answering("beta")}


def asked(fake: FakeChatModel) -> dict[str, int]:
    """Calls per family of the question asked (read from the prompt sent)."""
    counts = {"multiple_choice": 0, "math": 0}
    for call in fake.calls:
        last: BaseMessage = call["messages"][-1]
        counts["math" if "\\boxed{}" in str(last.content) else "multiple_choice"] += 1
    return counts


@pytest.fixture
def disk_bank(tmp_path: Path) -> QuestionBank:
    bank = new_bank(RECORDS, tmp_path / "bank")
    profile_pool(bank, pool_of(fresh()), progress=False)
    assert bank.coverage() == {"alpha": 10, "beta": 10}
    return bank


def test_a_system_prompt_change_re_asks_only_that_models_cells(disk_bank: QuestionBank) -> None:
    fakes = fresh()
    report = profile_pool(
        disk_bank, pool_of(fakes, alpha={"system_prompt": "Be careful."}), progress=False
    )
    assert asked(fakes["alpha"]) == {"multiple_choice": N_MC, "math": N_MATH}
    assert asked(fakes["beta"]) == {"multiple_choice": 0, "math": 0}
    assert all(c["messages"][0].content == "Be careful." for c in fakes["alpha"].calls)
    tally = report.models["alpha"]
    assert tally.recorded == N_MC + N_MATH and tally.cached == 0
    digest = prompt_digest(
        pool_of(fresh(), alpha={"system_prompt": "Be careful."})["alpha"], "math"
    )
    assert tally.prompt_digests == {"math": digest, "multiple_choice": digest} and digest
    # The record in the bank folder says which prompt alpha's cells were measured with.
    assert report.prompt_record == Path(disk_bank.where) / f"{disk_bank.name}.prompts.json"
    recorded = json.loads(report.prompt_record.read_text())["models"]
    assert recorded["alpha"] == {"math": digest, "multiple_choice": digest}
    # Again with the same prompt: nothing is asked.
    again = fresh()
    profile_pool(disk_bank, pool_of(again, alpha={"system_prompt": "Be careful."}), progress=False)
    assert len(again["alpha"].calls) == len(again["beta"].calls) == 0


def test_a_template_change_re_asks_only_that_models_cells_of_that_family(
    disk_bank: QuestionBank,
) -> None:
    fakes = fresh()
    templates = {"templates": {"math": "Check twice.\n\n{question}"}}
    profile_pool(disk_bank, pool_of(fakes, alpha=templates), progress=False)
    assert asked(fakes["alpha"]) == {"multiple_choice": 0, "math": N_MATH}
    assert len(fakes["beta"].calls) == 0
    assert all(c["messages"][-1].content.startswith("Check twice.") for c in fakes["alpha"].calls)
    # A second family's template: only those cells; the math ones stand.
    both = {"templates": {**templates["templates"], "multiple_choice": "MC: {question}"}}
    fakes = fresh()
    profile_pool(disk_bank, pool_of(fakes, alpha=both), progress=False)
    assert asked(fakes["alpha"]) == {"multiple_choice": N_MC, "math": 0}
    # Back to the default prompt: every cell is measured again, from the cache (no call).
    fakes = fresh()
    report = profile_pool(disk_bank, pool_of(fakes), progress=False)
    assert len(fakes["alpha"].calls) == 0
    assert report.models["alpha"].cached == report.models["alpha"].recorded == N_MC + N_MATH
    assert report.models["alpha"].prompt_digests == {"math": "", "multiple_choice": ""}


def test_a_run_that_did_not_finish_a_family_keeps_its_old_record(disk_bank: QuestionBank) -> None:
    def flaky(messages: list[BaseMessage], _: dict[str, Any]) -> str:
        if "3 + 3" in str(messages[-1].content):
            raise ConnectionError("down")
        return "The answer is (A)"

    new_prompt = {"templates": {"math": "M {question}"}}
    broken = {"alpha": FakeChatModel(model_name="alpha", respond=flaky), "beta": answering("b")}
    report = profile_pool(
        disk_bank, pool_of(broken, alpha=new_prompt), retries=0, backoff_s=0, progress=False
    )
    assert report.failed == ["alpha"] and report.models["alpha"].recorded == N_MATH - 1
    assert "alpha" not in PromptRecord(disk_bank).read()  # math not finished: still the old one
    # The rerun asks only the cell that failed; the others come from the cache.
    fakes = fresh()
    report = profile_pool(disk_bank, pool_of(fakes, alpha=new_prompt), progress=False)
    assert asked(fakes["alpha"]) == {"multiple_choice": 0, "math": 1}
    assert report.models["alpha"].cached == N_MATH - 1
    assert PromptRecord(disk_bank).read()["alpha"] == {
        "math": prompt_digest(pool_of(fresh(), alpha=new_prompt)["alpha"], "math")
    }


def test_default_prompts_keep_the_cache_keys_and_write_no_record(disk_bank: QuestionBank) -> None:
    settings = GenerationSettings()
    assert question_key("a", "q", "Q", "P", settings) == question_key(
        "a", "q", "Q", "P", settings, ""
    )
    assert question_key("a", "q", "Q", "P", settings, "d1") != question_key(
        "a", "q", "Q", "P", settings
    )
    assert not (Path(disk_bank.where) / f"{disk_bank.name}.prompts.json").exists()


def test_an_in_memory_bank_keeps_its_record_in_the_process() -> None:
    bank = new_bank(RECORDS)
    profile_pool(bank, pool_of(fresh()), progress=False)
    fakes = fresh()
    profile_pool(bank, pool_of(fakes, beta={"system_prompt": "S"}), progress=False)
    assert len(fakes["alpha"].calls) == 0 and len(fakes["beta"].calls) == N_MC + N_MATH
    fakes = fresh()
    profile_pool(bank, pool_of(fakes, beta={"system_prompt": "S"}), progress=False)
    assert len(fakes["beta"].calls) == 0
    _, measured = bank.capability(["alpha", "beta"])
    assert np.all(measured)


def test_a_broken_record_is_a_clear_error(disk_bank: QuestionBank) -> None:
    path = Path(disk_bank.where) / f"{disk_bank.name}.prompts.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"prompts\.json is not a cell prompt record .*delete it"):
        profile_pool(disk_bank, pool_of(fresh()), progress=False)
