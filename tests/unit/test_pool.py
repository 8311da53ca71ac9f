"""Pool: built from files or chat models, with clear errors for broken configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from smcs_graph import ConfigError, Pool, PoolModel, SMCSConfig
from smcs_graph.testing import FakeChatModel

GOOD = """
models:
  - name: big
    base_url: http://127.0.0.1:9/v1
    model: org/big-model
    max_concurrency: 4
    cost: {input_per_mtok: 1.0, output_per_mtok: 2.0}
  - name: small
    base_url: http://127.0.0.1:10/v1
    logprobs: false
"""


def test_pool_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD)
    pool = Pool.from_file(path)
    assert pool.names == ["big", "small"]
    big = pool["big"]
    assert isinstance(big.chat_model, ChatOpenAI)
    assert big.chat_model.model_name == "org/big-model"
    assert big.max_concurrency == 4 and big.slots is not None
    assert big.cost({"input_tokens": 1_000_000, "output_tokens": 500_000}) == pytest.approx(2.0)
    assert pool["small"].logprobs is False


def test_call_kwargs_carry_sampling_settings_and_seed() -> None:
    member = PoolModel(name="m", chat_model=FakeChatModel())
    kwargs = member.call_kwargs(SMCSConfig(seed=10), seed_offset=3)
    assert kwargs == {"temperature": 0.7, "presence_penalty": 1.05, "max_tokens": 8192, "seed": 13}
    quiet = PoolModel(name="q", chat_model=FakeChatModel(), sampling_kwargs=False)
    assert quiet.call_kwargs(SMCSConfig()) == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: []", "expected a 'models' list"),
        ("- just a list", "top level must be a mapping"),
        ("models:\n  - base_url: http://x/v1", "'name' must be a non-empty string"),
        ("models:\n  - name: a", "'base_url' must be an http(s) URL"),
        ("models:\n  - name: a\n    base_url: http://x/v1\n    colour: red", "unknown key"),
        (
            "models:\n  - name: a\n    base_url: http://x/v1\n  - name: a\n    base_url: http://y/v1",
            "unique",
        ),
        (
            "models:\n  - name: a\n    base_url: http://x/v1\n    max_concurrency: 0",
            "max_concurrency",
        ),
        (
            "models:\n  - name: a\n    base_url: http://x/v1\n    api_key_env: SMCS_NO_SUCH_VAR",
            "SMCS_NO_SUCH_VAR",
        ),
        ("models: [unclosed", "cannot parse"),
    ],
)
def test_broken_pool_files_say_what_is_wrong(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Pool.from_file(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_and_unknown_model() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        Pool.from_file("/nonexistent/pool.yaml")
    pool = Pool.from_chat_models({"a": FakeChatModel()})
    with pytest.raises(ConfigError, match="not in the pool"):
        pool["b"]


@pytest.mark.parametrize("key", ["threads", "parallel", "replicas"])
@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True])
def test_local_server_settings_must_be_positive_integers(key: str, value: object) -> None:
    config = {"models": [{"name": "smollm2-135m", "local": True, key: value}]}
    with pytest.raises(ConfigError, match=f"'{key}' must be an integer >= 1"):
        Pool.from_config(config)


def test_local_server_settings_belong_to_local_entries_only() -> None:
    config = {"models": [{"name": "m", "class": "x.y:Z", "threads": 2}]}
    with pytest.raises(ConfigError, match="apply to the built-in OpenAI-compatible client only"):
        Pool.from_config(config)
