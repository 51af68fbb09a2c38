"""The study bridge: ask/tell between Ray trial ids and Optuna trials, statuses, resume, storages."""

import shutil

import optuna
import pytest
from optuna.trial import TrialState

from sweep.optuna_study import StudyBridge, open_study
from sweep.spec import validate_spec
from sweep.status import TrialStatus

SPACE = {
    "optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
}


def _spec(**parts):
    return validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": SPACE, **parts})


def _bridge(spec, last_step=30):
    study = optuna.create_study(
        direction=spec.objective.direction,
        sampler=spec.sampler.build(spec.space),
        pruner=spec.pruner.build(last_step),
    )
    return StudyBridge(study, spec.space)


def test_ask_is_idempotent_per_ray_trial_and_tell_maps_statuses():
    bridge = _bridge(_spec(objective={"metric": "val_accuracy", "direction": "maximize"}))
    first = bridge.ask("a")
    assert bridge.ask("a") == first  # Ray retrying a trial must not ask the study twice
    for key in ("b", "c", "d", "e"):
        bridge.ask(key)
    assert len(bridge.study.trials) == 5
    assert bridge.number("a") == 0 and bridge.number("zz") is None
    bridge.report("b", 0.5, 10)
    bridge.tell("a", TrialStatus.COMPLETED, 0.9, {"num_steps": 40})
    bridge.tell("b", TrialStatus.PRUNED, None)
    bridge.tell("c", TrialStatus.DIVERGED, None, {"diverged_step": 3})
    bridge.tell("d", TrialStatus.FAILED, None)
    bridge.tell("e", TrialStatus.COMPLETED, None)  # completed without its objective: never best
    states = [t.state for t in bridge.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL]
    assert bridge.study.best_trial.number == 0 and bridge.study.best_value == 0.9
    assert bridge.study.trials[1].intermediate_values == {10: 0.5}
    assert bridge.study.trials[2].user_attrs == {"ray_trial_id": "c", "diverged_step": 3, "status": "diverged"}
    assert bridge.counts() == {"complete": 1, "fail": 3, "pruned": 1}
    bridge.tell("a", TrialStatus.COMPLETED, 0.1)  # already told: ignored, not an error
    assert bridge.study.best_value == 0.9


def test_pruning_marks_are_kept_until_cleared_or_told():
    bridge = _bridge(_spec(pruner={"kind": "median", "num_startup_trials": 0}))
    bridge.ask("a")
    bridge.mark_pruned("a")
    assert bridge.was_pruned("a")
    bridge.clear_pruned("a")
    assert not bridge.was_pruned("a")
    bridge.mark_pruned("a")
    bridge.tell("a", TrialStatus.PRUNED, None)
    assert not bridge.was_pruned("a")
    assert bridge.report("unknown", 0.5, 10) is False


def test_reopened_study_fails_trials_left_running_and_lists_prior_trials(tmp_path):
    spec = _spec(objective={"metric": "val_accuracy", "direction": "maximize"})
    url = f"sqlite:///{tmp_path}/o.db"
    bridge = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    params = bridge.ask("done")
    bridge.report("done", 0.7, 10)
    bridge.tell("done", TrialStatus.COMPLETED, 0.8)
    bridge.ask("cut")
    bridge.report("cut", 0.4, 10)
    bridge.tell("cut", TrialStatus.PRUNED, None)
    killed_params = bridge.ask("running")  # the driver died here
    again = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    states = [t.state for t in again.study.trials]
    # the killed trial's configuration is queued to run again, once
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING]
    prior = {p.ray_id: p for p in again.prior_trials()}
    assert set(prior) == {"done", "cut", "running"}
    assert (prior["done"].status, prior["done"].value, prior["done"].step) == (TrialStatus.COMPLETED, 0.8, 10)
    assert prior["done"].params == params
    assert prior["cut"].status == TrialStatus.PRUNED
    assert prior["running"].status == TrialStatus.KILLED
    assert again.study.trials[2].user_attrs["status"] == "killed"
    assert again.ask("rerun") == killed_params
    # a second resume (the rerun killed too) queues the rerun, not the first killed trial again
    third = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    waiting = [t for t in third.study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs["rerun_of"] for t in waiting] == [3]
    assert third.ask("again") == killed_params


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_resumed_sampler_does_not_replay_its_first_draws(tmp_path, kind):
    """A seeded sampler re-created on resume drew the configurations of the first trials again."""
    spec = _spec(sampler={"kind": kind, "seed": 3})
    url = f"sqlite:///{tmp_path}/o.db"
    bridge = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    first = []
    for i in range(3):
        first.append(bridge.ask(str(i)))
        bridge.tell(str(i), TrialStatus.COMPLETED, 0.5 + i / 10)
    shutil.copy(tmp_path / "o.db", tmp_path / "copy.db")
    again = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    later = [again.ask(f"r{i}") for i in range(3)]
    assert not any(p in first for p in later), (first, later)
    # and still deterministic: the same study resumed again draws the same configurations
    copy = StudyBridge(open_study(spec, f"sqlite:///{tmp_path}/copy.db", "s", 30), spec.space)
    assert [copy.ask(f"c{i}") for i in range(3)] == later


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
            "sampler": {
                "kind": kind,
                "seed": 0,
                **({"num_startup_trials": 2} if kind in ("tpe", "cmaes", "gp") else {}),
            },
        }
    )
    bridge = _bridge(spec)
    for i in range(5):
        params = bridge.ask(f"r{i}")
        assert params["optim.learning_rate"] in (1e-4, 1e-3, 1e-2) and 1 <= params["model.num_layers"] <= 3
        bridge.tell(f"r{i}", TrialStatus.COMPLETED, params["optim.learning_rate"] * params["model.num_layers"])
    assert bridge.counts() == {"complete": 5}


def test_grid_is_exhausted_after_every_point_once():
    spec = _spec(
        space={
            "optim.learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]},
            "seed": {"type": "int", "low": 0, "high": 1},
        },
        sampler={"kind": "grid", "seed": 3},
    )
    bridge = _bridge(spec)
    seen = []
    while not bridge.exhausted():
        params = bridge.ask(f"r{len(seen)}")
        seen.append((params["optim.learning_rate"], params["seed"]))
        bridge.tell(f"r{len(seen) - 1}", TrialStatus.COMPLETED, 0.5)
    assert sorted(seen) == [(1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]


def _suggestions(seed, n=10):
    bridge = _bridge(_spec(sampler={"kind": "tpe", "seed": seed, "num_startup_trials": 3}))
    out = []
    for i in range(n):
        params = bridge.ask(f"r{i}")
        out.append(params)
        value = (params["optim.learning_rate"] - 1e-3) ** 2 + (params["loss.name"] == "focal")
        bridge.tell(f"r{i}", TrialStatus.COMPLETED, value)
    return out


def test_same_seed_same_suggestions_past_the_startup_trials_and_other_seeds_differ():
    a, b, c = _suggestions(3), _suggestions(3), _suggestions(4)
    assert a == b  # all ten, seven of them modelled by TPE
    assert a[:3] != c[:3] and a[3:] != c[3:]


def test_journal_and_sqlite_storages_persist_the_study(tmp_path):
    spec = _spec()
    for url in (f"journal:{tmp_path}/study.log", f"sqlite:///{tmp_path}/study.db"):
        StudyBridge(open_study(spec, url, "s", 10), spec.space).ask("a")
        again = open_study(spec, url, "s", 10)
        assert len(again.trials) == 1 and again.trials[0].user_attrs["ray_trial_id"] == "a"


def test_prior_trials_carry_the_tied_and_fixed_values_optuna_never_sees(tmp_path):
    space = {
        "adaptation.r": {"type": "categorical", "choices": [4, 8]},
        "adaptation.alpha": {"type": "tied", "to": "adaptation.r", "times": 2},
        "adaptation.dropout": {"type": "fixed", "value": 0.1},
    }
    spec = validate_spec({"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": space})
    url = f"sqlite:///{tmp_path}/o.db"
    bridge = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    params = bridge.ask("a")
    bridge.tell("a", TrialStatus.COMPLETED, 0.5)
    prior = StudyBridge(open_study(spec, url, "s", 30), spec.space).prior_trials()[0]
    assert (
        prior.params
        == params
        == {
            "adaptation.r": params["adaptation.r"],
            "adaptation.alpha": 2 * params["adaptation.r"],
            "adaptation.dropout": 0.1,
        }
    )


def test_a_resumed_grid_runs_its_killed_points_before_it_counts_as_exhausted(tmp_path):
    spec = validate_spec(
        {
            "name": "t",
            "trial": {"model": {"name_or_path": "tiny-bert"}},
            "space": {"optim.learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]}},
            "sampler": {"kind": "grid"},
        }
    )
    url = f"sqlite:///{tmp_path}/o.db"
    bridge = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    bridge.ask("a")
    bridge.tell("a", TrialStatus.COMPLETED, 0.5)
    killed = bridge.ask("b")  # every point asked; the driver dies with b running
    assert bridge.exhausted()
    again = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    assert not again.exhausted()  # b's point is queued to run again
    assert again.ask("b2") == killed
    assert again.exhausted()


@pytest.mark.parametrize("kind", ["tpe", "random", "cmaes", "gp"])
def test_a_finite_space_never_repeats_a_configuration_until_all_were_tried(tmp_path, kind):
    space = {
        "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal", "label_smoothing"]},
        "model.num_layers": {"type": "int", "low": 1, "high": 2},
        "adaptation.alpha": {"type": "tied", "to": "model.num_layers", "times": 8},
    }
    sampler = {"kind": kind, "seed": 0} | ({} if kind == "random" else {"num_startup_trials": 2})
    spec = validate_spec(
        {"name": "t", "trial": {"model": {"name_or_path": "tiny-bert"}}, "space": space, "sampler": sampler}
    )
    url = f"sqlite:///{tmp_path}/o.db"
    bridge = StudyBridge(open_study(spec, url, "s", 30), spec.space)
    seen = []
    for i in range(3):
        seen.append(bridge.ask(str(i)))
        bridge.tell(str(i), TrialStatus.COMPLETED, 0.5 + 0.1 * i)
    again = StudyBridge(open_study(spec, url, "s", 30), spec.space)  # and across a resume
    for i in range(3, 6):
        seen.append(again.ask(str(i)))
        again.tell(str(i), TrialStatus.COMPLETED, 0.1 * i)
    keys = {(p["loss.name"], p["model.num_layers"]) for p in seen}
    assert len(keys) == 6  # all six configurations, none twice
    assert all(p["adaptation.alpha"] == 8 * p["model.num_layers"] for p in seen)
    assert again.ask("7")  # exhausted: a repeat is all there is, and it is allowed


def test_a_shared_study_keeps_each_sweeps_trials_its_own():
    spec = _spec(objective={"metric": "val_accuracy", "direction": "maximize"})
    study = optuna.create_study(direction="maximize", sampler=spec.sampler.build(spec.space))
    a = StudyBridge(study, spec.space, owner="run-a", shared=True)
    a.ask("a1")
    a.ask("a2")
    a.tell("a1", TrialStatus.COMPLETED, 0.7)
    study.ask()  # another sweep's trial, asked a moment ago: running, not marked yet
    # sweep B starts (or resumes) on the same study: it kills nothing running, adopts nothing finished
    b = StudyBridge(study, spec.space, owner="run-b", shared=True)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.RUNNING]
    assert b.prior_trials() == [] and b.counts() == {}
    b.ask("b1")
    assert study.trials[-1].user_attrs["sweep_run"] == "run-b"
    # sweep A resumes after a crash: its own running trial is killed and queued again, as its own
    a2 = StudyBridge(study, spec.space, owner="run-a", shared=True)
    assert study.trials[1].user_attrs["status"] == "killed"
    assert [p.number for p in a2.prior_trials()] == [0, 1]
    assert study.trials[2].state == TrialState.RUNNING and study.trials[3].state == TrialState.RUNNING
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [(t.user_attrs["rerun_of"], t.user_attrs["sweep_run"]) for t in waiting] == [(1, "run-a")]


def test_in_a_sweeps_own_study_unmarked_trials_predate_owners_and_are_its():
    spec = _spec(objective={"metric": "val_accuracy", "direction": "maximize"})
    study = optuna.create_study(direction="maximize", sampler=spec.sampler.build(spec.space))
    StudyBridge(study, spec.space).ask("old")  # a study written before owners were recorded
    resumed = StudyBridge(study, spec.space, owner="run-a", shared=False)
    assert [p.status for p in resumed.prior_trials()] == [TrialStatus.KILLED]


def _judged_spec(**pruner):
    return _spec(
        objective={"metric": "val_accuracy", "direction": "maximize"},
        pruner={"kind": "median", "num_startup_trials": 1, "warmup_steps": 0, **pruner},
    )


def test_a_pruner_on_val_loss_stops_a_trial_that_ties_on_accuracy_but_learns_nothing(tmp_path):
    """At step 20 every trial sits at the majority-class accuracy; only the validation loss tells the
    one that learns from the one that does not."""
    from sweep.optuna_study import pruning_judge

    url = f"sqlite:///{tmp_path}/s.db"
    by_accuracy = _bridge(_judged_spec())
    spec = _judged_spec(metric="val_loss")
    assert pruning_judge(_judged_spec(), 30) is None  # the objective's own pruner: no judge
    bridge = StudyBridge(open_study(spec, url, "s", 30), spec.space, judge=pruning_judge(spec, 30))
    for b in (by_accuracy, bridge):
        b.ask("learns")
        assert not b.report("learns", 0.56, 20, 0.64)
        assert not b.report("learns", 0.80, 40, 0.45)
        b.tell("learns", TrialStatus.COMPLETED, 0.80)
        b.ask("flat")
    assert not by_accuracy.report("flat", 0.56, 20, 0.69)  # a tie on accuracy: never pruned
    assert bridge.report("flat", 0.56, 20, 0.69)  # worse loss than the median: pruned at step 20
    assert bridge.was_pruned("flat")
    bridge.tell("flat", TrialStatus.PRUNED, None)
    trials = bridge.study.trials
    assert trials[1].state == TrialState.PRUNED
    assert trials[0].intermediate_values == {20: 0.56, 40: 0.80}  # the study keeps the objective's curve
    assert trials[0].user_attrs["pruning_curve"] == {"20": 0.64, "40": 0.45}
    # resume: a new judge knows the ended trials from their curves, so it prunes at once
    again = StudyBridge(open_study(spec, url, "s", 30), spec.space, judge=pruning_judge(spec, 30))
    again.ask("late")
    assert again.report("late", 0.56, 20, 0.70)
    assert not again.report("late2", 0.56, 20, 0.70)  # not asked: ignored


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        ({}, ("val_accuracy", "maximize")),
        ({"metric": "val_loss"}, ("val_loss", "minimize")),
        ({"metric": "val_f1_macro"}, ("val_f1_macro", "maximize")),
        ({"metric": "val_loss", "direction": "maximize"}, ("val_loss", "maximize")),
    ],
)
def test_the_pruners_metric_and_its_direction(pruner, expected):
    assert _judged_spec(**pruner).pruner.judged("val_accuracy", "maximize") == expected


def test_pruners_without_a_metric_refuse_one_and_a_misspelt_metric_is_refused_before_any_trial():
    from sweep.errors import SpecError

    with pytest.raises(SpecError, match="pruner.metric: not a setting of pruner kind 'none'"):
        _spec(pruner={"kind": "none", "metric": "val_loss"})
    with pytest.raises(SpecError) as err:
        _spec(pruner={"kind": "median", "metric": "val_los"})
    assert err.value.problems == [
        "pruner.metric: 'val_los' is not reported for classification; use one of "
        "['train_loss', 'val_loss', 'val_accuracy', 'val_f1_macro']"
    ]


def test_a_confirmation_is_asked_with_its_parameters_never_pruned_and_rerun_as_one_after_a_kill():
    spec = _spec(
        objective={"metric": "val_accuracy", "direction": "maximize"},
        pruner={"kind": "median", "num_startup_trials": 0, "warmup_steps": 0},
    )
    bridge = _bridge(spec)
    bridge.ask("a")
    bridge.report("a", 0.9, 10)
    bridge.tell("a", TrialStatus.COMPLETED, 0.9)
    moved = {"optim.learning_rate": 3e-5, "loss.name": "focal"}
    bridge.enqueue_confirmation(moved, {"param": "optim.learning_rate", "value": 3e-5, "of": 0})
    assert bridge.queued_confirmations() == 1
    assert bridge.ask("b") == moved and bridge.queued_confirmations() == 0
    assert bridge.confirmation_of("b") == {"param": "optim.learning_rate", "value": 3e-5, "of": 0}
    assert bridge.confirmation_of("a") is None
    bridge.ask("x")  # a trial of the search at the same value is pruned
    assert bridge.report("x", 0.1, 10) and bridge.was_pruned("x")
    bridge.tell("x", TrialStatus.PRUNED, None)
    assert not bridge.report("b", 0.1, 10) and not bridge.was_pruned("b")  # a confirmation runs on
    bridge.tell("b", TrialStatus.KILLED, None)
    # a resumed sweep queues the killed confirmation again, still a confirmation
    again = StudyBridge(bridge.study, bridge.space)
    assert again.queued_confirmations() == 1
    assert again.ask("c") == moved and again.confirmation_of("c")["param"] == "optim.learning_rate"
    prior = {p.number: p.confirmation for p in again.prior_trials()}
    assert prior == {0: False, 1: True, 2: False}  # (an enqueued trial takes its number when queued)
