"""SMCSConfig: the paper's defaults, validation with clear errors from one declaration."""

from __future__ import annotations

import dataclasses

import pytest

from smcs_graph import ConfigError, SMCSConfig
from smcs_graph.config import choices, context_schema


def test_defaults_are_the_papers() -> None:
    cfg = SMCSConfig()
    assert (cfg.k, cfg.n_sup_base, cfg.gamma, cfg.k_drop, cfg.n_aggregations, cfg.lam) == (
        7,
        400,
        0.95,
        1,
        8,
        1.0,
    )
    assert (cfg.temperature, cfg.presence_penalty, cfg.max_tokens) == (0.7, 1.05, 8192)
    assert (cfg.drop_mode, cfg.similarity_mode, cfg.support_rule) == ("paper",) * 3


def test_every_field_has_a_description_for_studio() -> None:
    for f in dataclasses.fields(SMCSConfig):
        assert f.metadata.get("description"), f.name


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 2.5}, "k must be an integer"),
        ({"gamma": 0}, "gamma must be a number in (0, 1]"),
        ({"gamma": 1.5}, "gamma"),
        ({"k_drop": 7}, "k_drop (7) must be smaller than k (7)"),
        ({"k_drop": -1}, "k_drop must be an integer >= 0"),
        ({"lam": float("nan")}, "lam"),
        ({"n_aggregations": 0}, "n_aggregations"),
        ({"drop_mode": "mine"}, "drop_mode must be one of"),
        ({"referencer_timeout_s": 0}, "referencer_timeout_s"),
        ({"aggregator": ""}, "aggregator must be a model name"),
        ({"seed": "x"}, "seed must be an integer"),
        ({"prior_rule": "mine"}, "prior_rule must be one of"),
        ({"shrink_strength": -1}, "shrink_strength"),
        ({"shrink_temperature": 0}, "shrink_temperature"),
    ],
)
def test_invalid_values_are_rejected_with_a_clear_message(changes, fragment) -> None:
    with pytest.raises(ConfigError) as err:
        SMCSConfig(**changes)
    assert fragment in str(err.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        SMCSConfig(k=0, gamma=2.0)
    assert "k must" in str(err.value) and "gamma must" in str(err.value)


def test_from_mapping_rejects_unknown_keys() -> None:
    assert SMCSConfig.from_mapping({"k": 3}).k == 3
    with pytest.raises(ConfigError, match="unknown SMCS setting"):
        SMCSConfig.from_mapping({"kk": 3})


def test_replace_validates() -> None:
    with pytest.raises(ConfigError):
        SMCSConfig().replace(k=-1)


def test_choices_come_from_the_settings_literal_types() -> None:
    assert choices("prior_rule") == ("paper", "shrunk", "hier", "learned")
    assert choices("support_rule") == ("paper", "authors")
    with pytest.raises(KeyError):
        choices("k")


@pytest.mark.parametrize(
    "f", [f for f in dataclasses.fields(SMCSConfig) if {"ge", "gt", "le"} & set(f.metadata)]
)
def test_every_declared_bound_is_enforced(f: dataclasses.Field[object]) -> None:
    """Bounds live in field metadata only; a value just past each one is rejected by name."""
    outside = []
    if "ge" in f.metadata:
        outside.append(f.metadata["ge"] - 1)
    if "gt" in f.metadata:
        outside.append(f.metadata["gt"])
    if "le" in f.metadata:
        outside.append(f.metadata["le"] + 0.5)
    for value in outside:
        with pytest.raises(ConfigError, match=f"{f.name} must be"):
            SMCSConfig(**{f.name: value})


def test_types_are_checked_from_the_annotations() -> None:
    with pytest.raises(ConfigError, match="weighted_prior must be true or false"):
        SMCSConfig(weighted_prior="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"support_rule must be one of \('paper', 'authors'\)"):
        SMCSConfig(support_rule="mine")  # type: ignore[arg-type]
    assert SMCSConfig(referencer_timeout_s=None, shrink_temperature=None).seed is None


def test_a_context_schema_with_other_defaults_validates_the_same_way() -> None:
    schema = context_schema(SMCSConfig(k=3))
    assert schema().k == 3
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        schema(k=0)
