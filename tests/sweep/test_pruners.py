"""Pruner and sampler settings: one class per kind, only its own fields, building its own Optuna object."""

import optuna
import pytest

from sweep.errors import SpecError
from sweep.spec import validate_spec


def _spec(**parts):
    return validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, **parts})


@pytest.mark.parametrize(
    ("pruner", "cls"),
    [
        ({"kind": "median"}, optuna.pruners.MedianPruner),
        ({"kind": "percentile", "percentile": 40.0}, optuna.pruners.PercentilePruner),
        ({"kind": "successive_halving"}, optuna.pruners.SuccessiveHalvingPruner),
        ({"kind": "hyperband", "min_resource": 10}, optuna.pruners.HyperbandPruner),
        ({"kind": "asha"}, optuna.pruners.NopPruner),  # Ray's ASHA scheduler prunes
        ({"kind": "none"}, optuna.pruners.NopPruner),
    ],
)
def test_each_pruner_kind_builds_its_optuna_pruner(pruner, cls):
    built = _spec(pruner=pruner).pruner.build(100)
    assert type(built) is cls


def test_wilcoxon_builds_on_folds_only():
    spec = _spec(trial={"model": {"name_or_path": "tiny-bert"}, "split": {"num_folds": 4}}, pruner={"kind": "wilcoxon"})
    assert type(spec.pruner.build(3)) is optuna.pruners.WilcoxonPruner
    with pytest.raises(SpecError) as err:
        _spec(pruner={"kind": "wilcoxon"})
    assert err.value.problems == [
        "pruner.kind: 'wilcoxon' compares folds; set trial.split.num_folds (>= 2) or pick another"
    ]


@pytest.mark.parametrize(
    ("sampler", "cls"),
    [
        ({"kind": "tpe"}, optuna.samplers.TPESampler),
        ({"kind": "random"}, optuna.samplers.RandomSampler),
        ({"kind": "grid"}, optuna.samplers.GridSampler),
        ({"kind": "cmaes"}, optuna.samplers.CmaEsSampler),
        ({"kind": "gp"}, optuna.samplers.GPSampler),
    ],
)
def test_each_sampler_kind_builds_its_optuna_sampler(sampler, cls):
    spec = _spec(space={"seed": {"type": "categorical", "choices": [1, 2]}}, sampler=sampler)
    assert isinstance(spec.sampler.build(spec.space), cls)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {"pruner": {"kind": "median", "p_threshold": 0.05}},
            "pruner.p_threshold: not a setting of pruner kind 'median'; remove it or choose a kind that has it",
        ),
        (
            {"sampler": {"kind": "random", "num_startup_trials": 3}},
            "sampler.num_startup_trials: not a setting of sampler kind 'random'; remove it or choose a kind that has it",
        ),
    ],
)
def test_a_field_of_another_kind_is_an_error_naming_it(section, expected):
    with pytest.raises(SpecError) as err:
        _spec(**section)
    assert err.value.problems == [expected]


def test_kind_defaults_to_median_and_tpe():
    spec = _spec(pruner={"warmup_steps": 20}, sampler={"seed": 4})
    assert (spec.pruner.kind, spec.pruner.warmup_steps) == ("median", 20)
    assert (spec.sampler.kind, spec.sampler.seed) == ("tpe", 4)


@pytest.mark.parametrize(
    ("pruner", "rungs", "apart"),
    [
        ({"kind": "median"}, None, False),  # the study's own pruner judges the objective
        ({"kind": "median", "metric": "val_loss"}, None, True),  # another metric: a study of its own
        ({"kind": "percentile", "direction": "minimize"}, None, True),  # another direction, the same
        ({"kind": "hyperband", "min_resource": 10}, None, False),
        ({"kind": "asha", "min_resource": 10, "reduction_factor": 2}, (10, 2), False),  # Ray's ASHA judges
        ({"kind": "asha", "metric": "val_loss"}, (1, 3), False),
        ({"kind": "none"}, None, False),
    ],
)
def test_each_pruner_says_which_ray_scheduler_it_becomes_and_where_it_judges(pruner, rungs, apart):
    built = _spec(objective={"metric": "val_accuracy", "direction": "maximize"}, pruner=pruner).pruner
    found = built.asha_rungs()
    assert (None if found is None else (found.min_resource, found.reduction_factor)) == rungs
    assert built.judges_apart("val_accuracy", "maximize") is apart


def test_reading_a_spec_imports_neither_optuna_nor_ray():
    import subprocess
    import sys

    code = (
        "import sys, sweep.spec, sweep.pruners, sweep.samplers;"
        "assert 'optuna' not in sys.modules and 'ray' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
