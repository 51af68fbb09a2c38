"""The study bridge, the space -> Optuna conversion, and the pruning scheduler driven by fake results."""

from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sweep.optuna_study import StudyBridge, make_pruner, make_sampler
from sweep.ray_backend import OptunaPruningScheduler, RecordingASHA
from sweep.spec import Pruner, Sampler, SweepError, validate_spec

SPACE = {
    "optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "model.num_layers": {"type": "int", "low": 2, "high": 6, "step": 2},
    "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
    "loss.gamma": {"type": "float", "low": 1.0, "high": 3.0, "when": {"loss.name": "focal"}},
    "adaptation.method": {"type": "fixed", "value": "lora"},
}


def _spec(**parts):
    return validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": SPACE, **parts})


def _bridge(spec, pruner=None):
    study = optuna.create_study(
        direction=spec.objective.direction,
        sampler=make_sampler(spec.sampler, spec.space),
        pruner=pruner or make_pruner(spec.pruner, 100),
    )
    return StudyBridge(study, spec.space)


def test_space_becomes_optuna_distributions_with_conditionals():
    bridge = _bridge(_spec(sampler={"kind": "random", "seed": 1}))
    seen_focal = seen_ce = False
    for i in range(30):
        params = bridge.ask(f"r{i}")
        trial = bridge._trials[f"r{i}"]
        assert trial.distributions["optim.learning_rate"] == FloatDistribution(1e-5, 1e-1, log=True)
        assert trial.distributions["model.num_layers"] == IntDistribution(2, 6, step=2)
        assert trial.distributions["loss.name"] == CategoricalDistribution(["cross_entropy", "focal"])
        assert params["adaptation.method"] == "lora"
        if params["loss.name"] == "focal":
            seen_focal = True
            assert 1.0 <= params["loss.gamma"] <= 3.0
        else:
            seen_ce = True
            assert "loss.gamma" not in params and "loss.gamma" not in trial.distributions
    assert seen_focal and seen_ce


def test_same_seed_same_suggestions():
    a = [_bridge(_spec(sampler={"kind": "tpe", "seed": 3})).ask("x") for _ in range(2)]
    assert a[0] == a[1]


def test_ask_is_idempotent_per_ray_trial_and_tell_maps_statuses():
    bridge = _bridge(_spec(objective={"metric": "val_accuracy", "direction": "maximize"}))
    first = bridge.ask("a")
    assert bridge.ask("a") == first  # Ray retrying a trial must not ask the study twice
    for key in ("b", "c", "d"):
        bridge.ask(key)
    assert len(bridge.study.trials) == 4
    assert bridge.number("a") == 0 and bridge.number("zz") is None
    bridge.report("b", 0.5, 10)
    bridge.tell("a", "completed", 0.9, {"num_steps": 40})
    bridge.tell("b", "pruned", None)
    bridge.tell("c", "diverged", None, {"diverged_step": 3})
    bridge.tell("d", "failed", None)
    states = [t.state for t in bridge.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert bridge.study.best_trial.number == 0 and bridge.study.best_value == 0.9
    assert bridge.study.trials[1].intermediate_values == {10: 0.5}
    assert bridge.study.trials[2].user_attrs == {"ray_trial_id": "c", "diverged_step": 3, "status": "diverged"}
    assert bridge.counts() == {"complete": 1, "fail": 2, "pruned": 1}
    bridge.tell("a", "completed", 0.1)  # already told: ignored, not an error


def test_reopened_study_fails_trials_left_running(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()
    again = optuna.load_study(study_name="s", storage=storage)
    StudyBridge(again, {})
    assert [t.state for t in again.trials] == [TrialState.FAIL]


# the values each fake trial reports at steps 10, 20, 30 (minimize val_loss)
CURVES = {
    "t0": [0.9, 0.7, 0.5],
    "t1": [0.8, 0.6, 0.4],
    "t2": [1.2, 1.1, 1.0],
    "t3": [0.85, 0.65, 0.45],
    "t4": [1.0, 0.95, 0.3],
    "t5": [0.7, 0.72, 0.74],
}


def _fake_trial(key, max_steps=30):
    return SimpleNamespace(trial_id=key, config={"template": {"optim": {"max_steps": max_steps}}, "params": {}})


@pytest.mark.parametrize(
    "pruner",
    [
        Pruner(kind="median", warmup_steps=0, num_startup_trials=2),
        Pruner(kind="percentile", percentile=40.0, num_startup_trials=1),
        Pruner(kind="successive_halving", min_resource=10, reduction_factor=2),
    ],
    ids=lambda p: p.kind,
)
def test_scheduler_decisions_equal_optunas_own_pruner(pruner):
    spec = _spec(pruner=pruner.model_dump())
    bridge = _bridge(spec)
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(0), pruner=make_pruner(pruner, 30))
    for key, curve in CURVES.items():
        bridge.ask(key)
        ref_trial = reference.ask()
        ours, theirs = [], []
        for step, value in zip((10, 20, 30), curve, strict=True):
            decision = scheduler.on_trial_result(None, _fake_trial(key), {"val_loss": value, "step": step})
            ours.append(decision == "STOP")
            ref_trial.report(value, step)
            theirs.append(ref_trial.should_prune() and step < 30)  # the last report ends the trial anyway
            if theirs[-1]:
                break
        assert ours == theirs, key
        status = "pruned" if ours[-1] else "completed"
        bridge.tell(key, status, None if ours[-1] else curve[-1])
        if theirs[-1]:
            reference.tell(ref_trial, state=TrialState.PRUNED)
        else:
            reference.tell(ref_trial, curve[-1])
    assert [t.state for t in bridge.study.trials] == [t.state for t in reference.trials]
    assert TrialState.PRUNED in [t.state for t in reference.trials]  # the case is not trivial


def test_misspelt_objective_is_an_error_at_the_first_report():
    bridge = _bridge(_spec())
    bridge.ask("a")
    scheduler = OptunaPruningScheduler(bridge, "val_acuracy")
    with pytest.raises(SweepError, match=r"objective.metric: 'val_acuracy' is not in the trial's report"):
        scheduler.on_trial_result(None, _fake_trial("a"), {"val_accuracy": 0.5, "step": 10})


def test_outcome_report_is_not_a_pruning_value():
    bridge = _bridge(_spec())
    bridge.ask("a")
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    assert scheduler.on_trial_result(None, _fake_trial("a"), {"outcome": "{}", "step": 30}) == "CONTINUE"
    assert bridge._trials["a"].number == 0 and not bridge.study.trials[0].intermediate_values


def test_asha_stops_are_recorded_as_prunes_and_values_kept():
    spec = _spec(pruner={"kind": "asha", "min_resource": 10, "reduction_factor": 2})
    bridge = _bridge(spec)
    asha = RecordingASHA(bridge, "val_loss", "min", max_t=30, grace=10, factor=2)
    decisions = {}
    for key, curve in CURVES.items():
        bridge.ask(key)
        trial = _fake_trial(key)
        asha.on_trial_add(None, trial)
        for step, value in zip((10, 20, 30), curve, strict=True):
            decisions[key] = asha.on_trial_result(None, trial, {"val_loss": value, "step": step})
            if decisions[key] == "STOP":
                break
    stopped = {k for k, d in decisions.items() if d == "STOP"}
    assert stopped and stopped == bridge.pruned
    assert bridge._trials["t2"].number == 2 and bridge.study.trials[2].intermediate_values[10] == 1.2


def test_wilcoxon_and_hyperband_are_built():
    assert isinstance(make_pruner(Pruner(kind="wilcoxon"), 4), optuna.pruners.WilcoxonPruner)
    assert isinstance(make_pruner(Pruner(kind="hyperband", min_resource=10), 100), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(Pruner(kind="none"), 100), optuna.pruners.NopPruner)
    grid = make_sampler(Sampler(kind="grid"), _spec().space)
    assert isinstance(grid, optuna.samplers.GridSampler)


@pytest.mark.parametrize("kind", ["tpe", "random", "grid", "cmaes", "gp"])
def test_every_sampler_runs_ask_tell(kind):
    space = {
        "optim.learning_rate": {"type": "categorical", "choices": [1e-4, 1e-3, 1e-2]},
        "model.num_layers": {"type": "int", "low": 1, "high": 3},
    }
    spec = validate_spec(
        {
            "name": "t",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "space": space,
            "sampler": {"kind": kind, "seed": 0, "num_startup_trials": 2},
        }
    )
    bridge = _bridge(spec)
    for i in range(5):
        if bridge.exhausted():
            break
        params = bridge.ask(f"r{i}")
        assert params["optim.learning_rate"] in (1e-4, 1e-3, 1e-2) and 1 <= params["model.num_layers"] <= 3
        bridge.tell(f"r{i}", "completed", params["optim.learning_rate"] * params["model.num_layers"])
    assert bridge.counts() == {"complete": 5}


def test_journal_and_sqlite_storages_persist_the_study(tmp_path):
    from sweep.optuna_study import open_study

    spec = _spec()
    for url in (f"journal:{tmp_path}/study.log", f"sqlite:///{tmp_path}/study.db"):
        study = open_study(spec, url, "s", 10)
        StudyBridge(study, spec.space).ask("a")
        again = open_study(spec, url, "s", 10)
        assert len(again.trials) == 1 and again.trials[0].user_attrs["ray_trial_id"] == "a"
