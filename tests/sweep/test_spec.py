from pathlib import Path

import pytest

from sweep.errors import SpecError
from sweep.spec import SweepSpec, load_spec, validate_spec

REPO = Path(__file__).parents[2]


def _spec(**parts):
    base = {"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}}
    return {**base, **parts}


def _problems(data):
    with pytest.raises(SpecError) as err:
        validate_spec(data)
    return err.value.problems


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            {"optim.learning_rate": {"type": "float", "low": 0.0, "high": 1e-2, "log": True}},
            "space.optim.learning_rate.low: 0.0 with log: true must be > 0; use a positive low or log: false",
        ),
        (
            {"optim.learning_rate": {"type": "float", "low": 1e-2, "high": 1e-4}},
            "space.optim.learning_rate.low: 0.01 > high 0.0001; low must be <= high",
        ),
        (
            {"model.num_layers": {"type": "int", "low": 1, "high": 4, "step": 2, "log": True}},
            "space.model.num_layers.step: 2 with log: true; step and log are exclusive, drop one",
        ),
        (
            {"adaptation.r": {"type": "categorical", "choices": []}},
            "space.adaptation.r.choices: [] is empty; list at least one choice",
        ),
        (
            {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
            "space.optim.lr: names no trial field; use a dotted trial field such as optim.learning_rate",
        ),
        (
            {"optim.learning_rat": {"type": "float", "low": 1e-4, "high": 1e-2}},
            "space.optim.learning_rat: names no trial field; did you mean optim.learning_rate?",
        ),
        (
            {"loss.name": {"type": "categorical", "choices": ["cross_entropy", "hinge"]}},
            "space.loss.name: value 'hinge' does not fit the trial ('hinge' does not fit task 'classification'; "
            "use one of ['cross_entropy', 'label_smoothing', 'focal', 'class_weighted'])",
        ),
        (
            {"loss.gamma": {"type": "float", "low": 1.0, "high": 2.0, "when": {"loss.name": "focal"}}},
            "space.loss.gamma.when: 'loss.name' is not a parameter listed before 'loss.gamma'; "
            "list 'loss.name' earlier in space",
        ),
        (
            {"optim.max_steps": {"typ": "int"}},
            "space.optim.max_steps: type None is not one of ['float', 'int', 'categorical', 'fixed', 'tied']; "
            "write e.g. {type: float, low: 1e-5, high: 1e-2, log: true}",
        ),
        (
            {"optim.max_steps": {"type": "int", "low": 1, "high": 5, "logg": True}},
            "space.optim.max_steps.logg: not a setting of space.optim.max_steps kind 'int'; remove it or choose a kind that has it",
        ),
    ],
)
def test_space_rules_name_path_value_and_fix(space, expected):
    assert expected in _problems(_spec(space=space))


def test_all_problems_are_reported_together():
    problems = _problems(
        _spec(
            space={
                "optim.learning_rate": {"type": "float", "low": 0.0, "high": 1.0, "log": True},
                "optim.lr": {"type": "int", "low": 1, "high": 2},
            },
            objective={"metric": "val_acc", "direction": "maximize"},
            pruner={"kind": "wilcoxon"},
        )
    )
    assert problems[0].startswith("objective.metric: 'val_acc' is not reported for classification")
    assert any(p.startswith("space.optim.learning_rate.low") for p in problems)
    assert any(p.startswith("space.optim.lr") for p in problems)
    assert problems[-1] == ("pruner.kind: 'wilcoxon' compares folds; set trial.split.num_folds (>= 2) or pick another")


def test_unknown_keys_and_bad_trial_template():
    problems = _problems(_spec(budgt={"num_trials": 3}))
    assert problems == ["budgt: unknown key; remove it or check the spelling"]
    problems = _problems(_spec(trial={"optim": {"learning_rate": -1.0}}))
    assert problems == ["trial.optim.learning_rate: -1.0 must be > 0"]


def test_grid_needs_finite_values():
    problems = _problems(
        _spec(space={"optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}, sampler={"kind": "grid"})
    )
    assert problems == ["space.optim.learning_rate: grid sampling needs finite values; use categorical or a step"]


def test_trial_template_carries_objective_and_threads():
    spec = validate_spec(
        _spec(objective={"metric": "val_f1_macro", "direction": "maximize"}, resources={"cpus_per_trial": 2.0})
    )
    cfg = spec.trial_config({"optim.learning_rate": 0.01, "loss.name": "focal"})
    assert (cfg.eval.metric, cfg.eval.direction, cfg.num_threads) == ("val_f1_macro", "maximize", 2)
    assert cfg.optim.learning_rate == 0.01 and cfg.loss.name == "focal"


def test_overrides_reach_space_entries_and_sections(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\ntrial: {model: {name_or_path: tiny-bert}}\n"
        "space:\n  optim.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
    )
    spec = load_spec(path, ["space.optim.learning_rate.high=5e-2", "budget.num_trials=3"])
    assert spec.space["optim.learning_rate"].high == 5e-2  # type: ignore[union-attr]
    assert spec.budget.num_trials == 3
    with pytest.raises(SpecError, match="budget.num_trials: 0 must be > 0"):
        load_spec(path, ["budget.num_trials=0"])


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_validates_with_its_data(path):
    from sweep.run.plan import preflight

    spec = load_spec(path)
    assert isinstance(spec, SweepSpec) and spec.space
    data = spec.trial.get("data", {}).get("path")
    if data and data.startswith("../shared/") and not (REPO / data).exists():
        pytest.skip(f"{path.name} uses {data}, a sibling of the repo that this checkout does not have")
    fingerprints = preflight(spec)
    assert set(fingerprints.fingerprints) == {"data", "split"} and fingerprints.max_last_step >= 1


def test_preflight_catches_data_and_depth_errors_before_ray():
    from sweep.run.plan import preflight

    spec = validate_spec(_spec(trial={"model": {"name_or_path": "tiny-bert"}, "data": {"text_column": "body"}}))
    with pytest.raises(SpecError, match=r"trial.data.text_column: column 'body' is not in"):
        preflight(spec)
    spec = validate_spec(_spec(space={"model.num_layers": {"type": "int", "low": 1, "high": 8}}))
    with pytest.raises(SpecError) as err:
        preflight(spec)
    assert err.value.problems == [
        "space.model.num_layers: value 8 fails: model.num_layers: 8 > the 4 layers of 'tiny-bert'; use 1..4"
    ]
