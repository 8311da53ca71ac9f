"""SMCSConfig: the paper's defaults, validation with clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from smcs_graph import ConfigError, SMCSConfig


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
