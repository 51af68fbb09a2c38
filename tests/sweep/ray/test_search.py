"""Scheduler decisions, driven by fake results: our pruning scheduler against Optuna's own pruner,
Ray's ASHA recorded as prunes, the guard that never prunes a trial's final report, and the scheduler
each pruner becomes. No Ray starts: Tune's classes are called as Tune would call them."""

from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from sweep.errors import SweepError
from sweep.optuna_study import StudyBridge
from sweep.ray.search import OptunaPruningScheduler, OptunaSearcher, RecordingASHA, build_scheduler
from sweep.run.plan import last_step_of
from sweep.spec import validate_spec
from sweep.status import TrialStatus

# the values each fake trial reports at steps 10, 20, 30 (minimize val_loss)
CURVES = {
    "t0": [0.9, 0.7, 0.5],
    "t1": [0.8, 0.6, 0.4],
    "t2": [1.2, 1.1, 1.0],
    "t3": [0.85, 0.65, 0.45],
    "t4": [1.0, 0.95, 0.3],
    "t5": [0.7, 0.72, 0.74],
}


def _spec(**parts):
    space = {"optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}}
    return validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": space, **parts})


def _bridge(spec, last_step=30):
    study = optuna.create_study(sampler=spec.sampler.build(spec.space), pruner=spec.pruner.build(last_step))
    return StudyBridge(study, spec.space)


def _trial(key, last_step=30):
    return SimpleNamespace(trial_id=key, config={"params": {}, "last_step": last_step})


@pytest.mark.parametrize(
    ("pruner", "reference"),
    [
        ({"kind": "median", "num_startup_trials": 2}, lambda: optuna.pruners.MedianPruner(n_startup_trials=2)),
        (
            {"kind": "percentile", "percentile": 40.0, "num_startup_trials": 1},
            lambda: optuna.pruners.PercentilePruner(40.0, n_startup_trials=1),
        ),
        (
            {"kind": "successive_halving", "min_resource": 10, "reduction_factor": 2},
            lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=2),
        ),
    ],
    ids=lambda p: p["kind"] if isinstance(p, dict) else "",
)
def test_scheduler_decisions_equal_optunas_own_pruner(pruner, reference):
    bridge = _bridge(_spec(pruner=pruner))
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    ref = optuna.create_study(sampler=optuna.samplers.RandomSampler(0), pruner=reference())
    for key, curve in CURVES.items():
        bridge.ask(key)
        ref_trial = ref.ask()
        ours, theirs = [], []
        for step, value in zip((10, 20, 30), curve, strict=True):
            ours.append(scheduler.on_trial_result(None, _trial(key), {"val_loss": value, "step": step}) == "STOP")
            ref_trial.report(value, step)
            theirs.append(ref_trial.should_prune() and step < 30)  # the last report ends the trial anyway
            if theirs[-1]:
                break
        assert ours == theirs, key
        assert bridge.was_pruned(key) == ours[-1]
        bridge.tell(key, TrialStatus.PRUNED if ours[-1] else TrialStatus.COMPLETED, curve[-1])
        if theirs[-1]:
            ref.tell(ref_trial, state=TrialState.PRUNED)
        else:
            ref.tell(ref_trial, curve[-1])
    assert [t.state for t in bridge.study.trials] == [t.state for t in ref.trials]
    assert TrialState.PRUNED in [t.state for t in ref.trials]  # the case is not trivial


def test_final_report_is_never_pruned_even_when_the_pruner_says_so():
    bridge = _bridge(_spec(pruner={"kind": "median", "num_startup_trials": 1}))
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    bridge.ask("good")
    scheduler.on_trial_result(None, _trial("good", 60), {"val_loss": 0.1, "step": 60})
    bridge.tell("good", TrialStatus.COMPLETED, 0.1)
    bridge.ask("bad")
    # only one report, at the last step: Optuna's pruner says prune, the guard says the trial is done
    assert scheduler.on_trial_result(None, _trial("bad", 60), {"val_loss": 0.9, "step": 60}) == "CONTINUE"
    assert not bridge.was_pruned("bad")
    bridge.ask("bad-early")
    assert scheduler.on_trial_result(None, _trial("bad-early", 120), {"val_loss": 0.9, "step": 60}) == "STOP"
    assert bridge.was_pruned("bad-early")


def test_searcher_gives_each_trial_its_last_step_from_the_validated_config():
    # no optim.max_steps in the template: TrialConfig's default (60) applies, and the trial knows it
    spec = validate_spec(
        {
            "name": "t",
            "trial": {"model": {"name_or_path": "tiny-bert"}, "data": {"max_rows": 200}},
            "space": {"optim.batch_size": {"type": "categorical", "choices": [8]}},
        }
    )
    searcher = OptunaSearcher(_bridge(spec), "min", lambda params: last_step_of(spec, params))
    assert searcher.suggest("a") == {"params": {"optim.batch_size": 8}, "last_step": 60}
    # epoch-based: 1 epoch of 160 training rows in batches of 8 = 20 steps; k folds report per fold
    epochs = validate_spec(
        {
            "name": "t",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "data": {"max_rows": 200},
                "optim": {"max_steps": None, "num_epochs": 1.0, "batch_size": 8},
            },
        }
    )
    assert last_step_of(epochs, {}) == 20
    assert last_step_of(epochs, {"optim.grad_accum_steps": 2}) == 10
    assert last_step_of(epochs, {"split.num_folds": 4}) == 3
    assert last_step_of(epochs, {"model.num_layers": 9}) is None  # the trial will reject it


def test_misspelt_objective_is_an_error_at_the_first_report():
    bridge = _bridge(_spec())
    bridge.ask("a")
    scheduler = OptunaPruningScheduler(bridge, "val_acuracy")
    with pytest.raises(SweepError, match=r"objective.metric: 'val_acuracy' is not in the trial's report"):
        scheduler.on_trial_result(None, _trial("a"), {"val_accuracy": 0.5, "step": 10})


def test_outcome_report_is_not_a_pruning_value():
    bridge = _bridge(_spec())
    bridge.ask("a")
    scheduler = OptunaPruningScheduler(bridge, "val_loss")
    assert scheduler.on_trial_result(None, _trial("a"), {"outcome": "{}"}) == "CONTINUE"
    assert not bridge.study.trials[0].intermediate_values


def test_asha_stops_are_recorded_as_prunes_and_values_kept():
    bridge = _bridge(_spec(pruner={"kind": "asha", "min_resource": 10, "reduction_factor": 2}))
    asha = RecordingASHA(bridge, "val_loss", "min", max_t=30, grace=10, factor=2)
    decisions = {}
    for key, curve in CURVES.items():
        bridge.ask(key)
        trial = _trial(key)
        asha.on_trial_add(None, trial)
        for step, value in zip((10, 20, 30), curve, strict=True):
            decisions[key] = (step, asha.on_trial_result(None, trial, {"val_loss": value, "step": step}))
            if decisions[key][1] == "STOP":
                break
    stopped = {k for k, (_, d) in decisions.items() if d == "STOP"}
    assert stopped == {k for k in CURVES if bridge.was_pruned(k)}
    assert "t2" in stopped and decisions["t2"][0] in (10, 20)  # the worst curve stops at a rung
    assert {k for k, (step, d) in decisions.items() if d == "CONTINUE" and step == 30} == set(CURVES) - stopped
    assert bridge.study.trials[2].intermediate_values[10] == 1.2


def test_asha_can_judge_another_metric_than_the_objective():
    """ASHA on val_loss (lower is better) in a sweep that maximizes accuracy: the trials tie on accuracy,
    and the one whose loss is worse stops at the first rung; the study keeps the accuracies."""
    spec = _spec(
        objective={"metric": "val_accuracy", "direction": "maximize"},
        pruner={"kind": "asha", "min_resource": 10, "reduction_factor": 2, "metric": "val_loss"},
    )
    bridge = _bridge(spec)
    asha = RecordingASHA(bridge, "val_accuracy", "min", max_t=30, grace=10, factor=2, judged="val_loss")
    decisions = {}
    for key, loss in (("a", 0.60), ("b", 0.69)):
        bridge.ask(key)
        asha.on_trial_add(None, _trial(key))
        decisions[key] = asha.on_trial_result(None, _trial(key), {"val_accuracy": 0.56, "val_loss": loss, "step": 10})
    assert decisions == {"a": "CONTINUE", "b": "STOP"}
    assert bridge.was_pruned("b") and bridge.study.trials[1].intermediate_values == {10: 0.56}
    with pytest.raises(SweepError, match=r"pruner.metric: 'val_loss' is not in the trial's report"):
        asha.on_trial_result(None, _trial("a"), {"val_accuracy": 0.6, "step": 20})


def test_the_median_scheduler_passes_the_judged_metric():
    from sweep.optuna_study import pruning_judge

    spec = _spec(
        objective={"metric": "val_accuracy", "direction": "maximize"},
        pruner={"kind": "median", "num_startup_trials": 1, "metric": "val_loss"},
    )
    study = optuna.create_study(direction="maximize", pruner=spec.pruner.build(30))
    bridge = StudyBridge(study, spec.space, judge=pruning_judge(spec, 30))
    scheduler = OptunaPruningScheduler(bridge, "val_accuracy", "val_loss")
    bridge.ask("a")
    scheduler.on_trial_result(None, _trial("a"), {"val_accuracy": 0.56, "val_loss": 0.6, "step": 10})
    bridge.tell("a", TrialStatus.COMPLETED, 0.56)
    bridge.ask("b")
    assert scheduler.on_trial_result(None, _trial("b"), {"val_accuracy": 0.56, "val_loss": 0.7, "step": 10}) == "STOP"


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        ({"kind": "median"}, (OptunaPruningScheduler, "val_loss")),
        ({"kind": "hyperband", "min_resource": 10, "metric": "val_accuracy"}, (OptunaPruningScheduler, "val_accuracy")),
        ({"kind": "asha", "min_resource": 10, "reduction_factor": 2}, (RecordingASHA, "val_loss")),
        ({"kind": "none"}, (OptunaPruningScheduler, "val_loss")),
    ],
    ids=lambda p: p["kind"] if isinstance(p, dict) else "",
)
def test_each_pruner_becomes_its_scheduler(pruner, expected, monkeypatch):
    from ray.tune.schedulers import ASHAScheduler

    given = {}
    original = ASHAScheduler.__init__

    def init(self, **kwargs):
        given.update(kwargs)
        original(self, **kwargs)

    monkeypatch.setattr(ASHAScheduler, "__init__", init)  # (what RecordingASHA gives Ray's ASHA)
    spec = _spec(pruner=pruner, objective={"metric": "val_loss", "direction": "minimize"})
    scheduler = build_scheduler(spec, _bridge(spec), 30)
    assert (type(scheduler), scheduler.judged) == expected
    if isinstance(scheduler, RecordingASHA):  # the pruner's rungs, the trials' last step, the judged metric
        assert given == {
            "time_attr": "step",
            "metric": "val_loss",
            "mode": "min",
            "max_t": 30,
            "grace_period": 10,
            "reduction_factor": 2,
        }
