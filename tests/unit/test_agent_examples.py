"""The agent examples run as a user runs them, as subprocesses on scripted models (`--fake`)."""

from __future__ import annotations

from tests.unit.test_examples_fake import run_example


def test_routed_agent_keeps_the_top_prior_model_through_the_tool_loop() -> None:
    lines = run_example("agent_routed.py", "--fake").splitlines()
    assert lines[1] == "AIMessage [solver]: '' tool_calls=[('multiply', {'a': 1234, 'b': 5678})]"
    assert lines[2] == "ToolMessage: '7006652'"
    assert lines[3] == "AIMessage [solver]: '1234 times 5678 is 7006652.'"
    assert lines[4].startswith("step 1: route -> solver (highest prior")
    assert lines[5].startswith("step 2: route -> solver (kept: decided at step 1")


def test_escalating_agent_routes_when_sure_and_escalates_when_not() -> None:
    out = run_example("agent_escalate.py", "--fake")
    sure, unsure = out.split("Q: ")[1:]
    assert "gate: sure" in sure and "route -> answered by solver" in sure
    assert "gate: uncertain (no candidate has support" in unsure
    assert "ensemble -> answered by" in unsure
    tokens = [int(line.split()[-1]) for line in out.splitlines() if "tokens:" in line]
    assert tokens[1] > 5 * tokens[0]  # the ensemble's usage sums its K + n calls


def test_decision_model_drives_the_stock_router() -> None:
    assert (
        run_example("agent_decision_model.py", "--fake")
        .splitlines()[0]
        .startswith("route: places -> atlas")
    )
    out = run_example("agent_decision_model.py", "--fake", "What is 12 times 7?")
    assert out.startswith("route: numbers -> solver") and "answer: 'The answer is 84.'" in out
