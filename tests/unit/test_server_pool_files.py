"""Pool files for `smcs serve` and friends: `class:` entries build any LangChain chat model."""

from __future__ import annotations

from pathlib import Path

import pytest

from smcs_graph import ConfigError, Pool
from smcs_graph.testing import FakeChatModel

CLASS_POOL = """
models:
  - name: scripted
    class: smcs_graph.testing:FakeChatModel
    kwargs:
      model_name: scripted
      latency_s: 0.01
      responses:
        - "plain text"
        - content: ""
          tool_calls: [{name: weather, args: {city: Paris}, id: call_1}]
    max_concurrency: 3
    sampling_kwargs: false
    logprobs: false
    cost: {input_per_mtok: 1.0}
"""


def test_a_class_entry_builds_the_model_from_its_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(CLASS_POOL)
    member = Pool.from_file(path)["scripted"]
    model = member.chat_model
    assert isinstance(model, FakeChatModel)
    assert model.model_name == "scripted" and model.latency_s == 0.01
    assert model.invoke("hi").content == "plain text"
    assert model.invoke("hi").tool_calls[0]["args"] == {"city": "Paris"}
    assert member.max_concurrency == 3 and member.logprobs is False
    assert member.sampling_kwargs is False and member.input_cost_per_mtok == 1.0


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"class": "no_such_package.models:Chat"}, "cannot import module 'no_such_package.models'"),
        ({"class": "smcs_graph.testing"}, "'package.module:ClassName'"),
        ({"class": "smcs_graph.testing:Nothing"}, "found nothing"),
        ({"class": "smcs_graph.models.pool:Pool"}, "BaseChatModel subclass"),
        (
            {"class": "smcs_graph.testing:FakeChatModel", "kwargs": {"latency_s": "slow"}},
            "rejected its kwargs",
        ),
        (
            {"class": "smcs_graph.testing:FakeChatModel", "kwargs": [1]},
            "'kwargs' must be a mapping",
        ),
        (
            {"class": "smcs_graph.testing:FakeChatModel", "base_url": "http://127.0.0.1:1/v1"},
            "move them into 'kwargs'",
        ),
    ],
)
def test_broken_class_entries_say_what_to_fix(entry: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match="model 'm'") as caught:
        Pool.from_config({"models": [{"name": "m", **entry}]}, source="pool.yaml")
    assert fragment in str(caught.value)
