"""Pool: built from files or chat models, with clear errors for broken configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from smcs_graph import ConfigError, Pool, PoolModel, SMCSConfig
from smcs_graph.models import load_pool_file, read_pool_file
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


# --------------------------------------------------------------------------- the pool file parser

WITH_SETTINGS = GOOD + "smcs:\n  k: 2\n  seed: 7\n"


def test_one_parser_reads_the_models_and_their_settings(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(WITH_SETTINGS)
    parsed = read_pool_file(path)
    assert parsed.model_names == ["big", "small"]  # no chat model built for the names
    assert (parsed.settings.k, parsed.settings.seed) == (2, 7)
    assert read_pool_file(path, {"k": 1}).settings.k == 1  # overrides win over the file
    pool, settings = load_pool_file(path, {"seed": 3})
    assert pool.names == ["big", "small"] and (settings.k, settings.seed) == (2, 3)
    bare = tmp_path / "bare.json"
    bare.write_text('{"models": [{"name": "a", "base_url": "http://127.0.0.1:9/v1"}]}')
    assert load_pool_file(bare)[1] == SMCSConfig()  # no 'smcs:' section: the paper's defaults


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"models:\n  - name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 21)"),
        (b"", "the file is empty"),
        (b"models: [{name: a, base_url: 'http://x/v1'}]\nsmsc: {k: 2}\n", "unknown top-level"),
        (b"models: [{name: a, base_url: 'http://x/v1'}]\nsmcs: [k, 2]\n", "'smcs' must be"),
        (b"models: [{name: a, base_url: 'http://x/v1'}]\nsmcs: {kk: 2}\n", "'smcs:' section"),
        (b"models: [{name: a, base_url: 'http://x/v1'}]\nsmcs: {k: 0}\n", "invalid SMCS"),
    ],
)
def test_broken_pool_files_name_the_file_and_the_fix(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "pool.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_pool_file(path)
    assert fragment in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(ConfigError, match=r"pool\.yaml"):
        Pool.from_file(path)  # the same parser


def test_bad_overrides_and_unreadable_paths_say_so(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(WITH_SETTINGS)
    with pytest.raises(ConfigError, match=r"with overrides bogus\): unknown SMCS setting"):
        read_pool_file(path, {"bogus": 1})
    with pytest.raises(ConfigError, match="is a folder"):
        read_pool_file(tmp_path)
    json_path = tmp_path / "pool.json"
    json_path.write_text("models:\n  - name: a\n")
    with pytest.raises(ConfigError, match="cannot parse the file as JSON"):
        read_pool_file(json_path)
