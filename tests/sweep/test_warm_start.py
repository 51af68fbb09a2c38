"""Warm start: a new sweep's study starts with the earlier sweep's ended trials inside its space, marked
as that sweep's, so the new sweep's budget, record and evidence never count them."""

import json

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweep.errors import SpecError
from sweep.optuna_study import OWNER_ATTR, StudyBridge, open_study, study_trials
from sweep.run import record
from sweep.run_dir import SPEC_FILE, STATE_FILE
from sweep.spec import validate_spec
from sweep.status import TrialStatus
from sweep.tracking import MlflowRecorder
from sweep.warm_start import FROM_ATTR, NUMBER_ATTR, inside, previous_sweep, read, warm

OLD_SPACE = {
    "optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
}
# what a verdict might write next: the top of the rate's range cut off, the loss fixed
NEW_SPACE = {
    "optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "loss.name": {"type": "fixed", "value": "cross_entropy"},
}
PREVIOUS = "prev-parent-run"
NEW = "new-parent-run"


def _spec(space, **parts):
    base = {
        "name": "s",
        "trial": {"model": {"name_or_path": "tiny-bert"}},
        "space": space,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "pruner": {"kind": "median", "num_startup_trials": 1, "warmup_steps": 0},
    }
    return validate_spec({**base, **parts})


def _previous_sweep(tmp_path, storage=None):
    """A finished sweep's run dir: its spec, its sweep.json and its study (owner PREVIOUS), holding a
    trial of each kind, in and outside NEW_SPACE."""
    run_dir = tmp_path / "prev"
    run_dir.mkdir()
    spec = _spec(OLD_SPACE, **({"execution": {"storage": storage}} if storage else {}))
    url = storage or f"sqlite:///{run_dir}/optuna.db"
    (run_dir / SPEC_FILE).write_text(yaml.safe_dump(spec.stored()))
    (run_dir / STATE_FILE).write_text(
        json.dumps({"parent_run_id": PREVIOUS, "tracking_uri": "x", "experiment": "prev", "storage": url})
    )
    study = open_study(spec, url, "s", 30)
    bridge = StudyBridge(study, spec.space, owner=PREVIOUS)
    ended = [  # params, status, value, curve
        ({"optim.learning_rate": 1e-3, "loss.name": "cross_entropy"}, TrialStatus.COMPLETED, 0.9, {10: 0.7, 20: 0.9}),
        ({"optim.learning_rate": 5e-2, "loss.name": "cross_entropy"}, TrialStatus.PRUNED, None, {10: 0.5}),  # lr out
        ({"optim.learning_rate": 1e-3, "loss.name": "focal"}, TrialStatus.COMPLETED, 0.8, {10: 0.6, 20: 0.8}),  # loss
        ({"optim.learning_rate": 2e-4, "loss.name": "cross_entropy"}, TrialStatus.PRUNED, None, {10: 0.55}),
        ({"optim.learning_rate": 9e-3, "loss.name": "cross_entropy"}, TrialStatus.DIVERGED, None, {}),
        ({"optim.learning_rate": 3e-3, "loss.name": "cross_entropy"}, TrialStatus.FAILED, None, {}),  # nothing learnt
    ]
    for i, (params, status, value, curve) in enumerate(ended):
        study.enqueue_trial(params)
        bridge.ask(str(i))
        for step, v in curve.items():
            bridge.report(str(i), v, step)
        bridge.tell(str(i), status, value, {"pruning_curve": {"10": 0.1}} if curve else None)
    # a trial the previous sweep had itself from the sweep before it: the chain's memory
    study.add_trial(
        optuna.trial.create_trial(
            params={"optim.learning_rate": 5e-3, "loss.name": "cross_entropy"},
            distributions={
                "optim.learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
                "loss.name": optuna.distributions.CategoricalDistribution(["cross_entropy", "focal"]),
            },
            value=0.85,
            intermediate_values={20: 0.85},
            user_attrs={OWNER_ATTR: "first", FROM_ATTR: "first", NUMBER_ATTR: 4, "status": "completed"},
        )
    )
    return run_dir


def test_copies_exactly_the_trials_inside_the_new_space_marked_as_the_previous_sweeps(tmp_path):
    spec = _spec(NEW_SPACE, warm_start={"from_run": str(_previous_sweep(tmp_path))})
    url = f"sqlite:///{tmp_path}/new.db"
    study = open_study(spec, url, "s", 30)
    previous = previous_sweep(spec)
    assert previous is not None and previous.parent_run_id == PREVIOUS
    line = warm(study, previous, spec, url)
    assert line == f"warm start: 4 trials of {tmp_path / 'prev'} inside the new space (2 outside)"
    copied = [(t.params, t.state, t.value, t.intermediate_values) for t in study.trials]
    assert copied == [
        ({"optim.learning_rate": 1e-3}, TrialState.COMPLETE, 0.9, {10: 0.7, 20: 0.9}),
        ({"optim.learning_rate": 2e-4}, TrialState.PRUNED, 0.55, {10: 0.55}),
        ({"optim.learning_rate": 9e-3}, TrialState.FAIL, None, {}),
        ({"optim.learning_rate": 5e-3}, TrialState.COMPLETE, 0.85, {20: 0.85}),
    ]
    attrs = [t.user_attrs for t in study.trials]
    assert attrs[0] == {
        OWNER_ATTR: PREVIOUS,
        FROM_ATTR: PREVIOUS,
        NUMBER_ATTR: 0,
        "status": "completed",
        "pruning_curve": {"10": 0.1},
    }
    assert [a[NUMBER_ATTR] for a in attrs] == [0, 3, 4, 4] and attrs[2]["status"] == "diverged"
    assert (attrs[3][OWNER_ATTR], attrs[3][FROM_ATTR]) == ("first", "first")  # kept: it is the first sweep's

    # none of them is the new sweep's: no budget used, no prior trial to record, no evidence
    bridge = StudyBridge(study, spec.space, owner=NEW)
    assert bridge.prior_trials() == [] and bridge.counts() == {}
    bridge.ask("a")
    bridge.tell("a", TrialStatus.COMPLETED, 0.5)
    assert bridge.counts() == {"complete": 1}
    assert [t["number"] for t in study_trials(url, "s", owner=NEW)] == [4]


def test_the_new_sweeps_pruner_knows_the_copied_curves(tmp_path):
    """With one copied trial at 0.7 on step 10, a new trial at 0.2 there is below the median: pruned.
    A cold study has no other trial, and its pruner lets it go on."""
    spec = _spec(NEW_SPACE, warm_start={"from_run": str(_previous_sweep(tmp_path))})
    cold = StudyBridge(open_study(spec, f"sqlite:///{tmp_path}/cold.db", "s", 30), spec.space, owner=NEW)
    cold.ask("a")
    assert not cold.report("a", 0.2, 10)
    url = f"sqlite:///{tmp_path}/new.db"
    study = open_study(spec, url, "s", 30)
    warm(study, previous_sweep(spec), spec, url)
    bridge = StudyBridge(study, spec.space, owner=NEW)
    bridge.ask("a")
    assert bridge.report("a", 0.2, 10)


def test_a_study_shared_with_the_previous_sweep_gets_no_copies(tmp_path):
    storage = f"sqlite:///{tmp_path}/team.db"
    spec = _spec(NEW_SPACE, warm_start={"from_run": str(_previous_sweep(tmp_path, storage))})
    spec = spec.model_copy(update={"execution": spec.execution.model_copy(update={"storage": storage})})
    study = open_study(spec, storage, "s", 30)
    line = warm(study, previous_sweep(spec), spec, storage)
    assert line.endswith("shares this sweep's study (" + storage + "): its trials are there already")
    assert len(study.trials) == 7  # the previous sweep's own, none twice


def test_inside_reads_fixed_tied_and_template_values_the_trial_ran_with():
    old = _spec({**OLD_SPACE, "optim.weight_decay": {"type": "categorical", "choices": [0.0, 0.1]}})
    new = _spec({**NEW_SPACE, "optim.weight_decay": {"type": "float", "low": 0.0, "high": 0.05}})
    ran = {"optim.learning_rate": 1e-3, "loss.name": "cross_entropy", "optim.weight_decay": 0.0}
    assert inside(old, new, ran) == {"optim.learning_rate": 1e-3, "optim.weight_decay": 0.0}
    assert inside(old, new, {**ran, "optim.weight_decay": 0.1}) is None  # out of the new range
    # a parameter the new sweep leaves to its template: inside only where the trial ran with that value
    dropped = _spec({"optim.learning_rate": NEW_SPACE["optim.learning_rate"]})
    assert inside(old, dropped, ran) == {"optim.learning_rate": 1e-3}
    assert inside(old, dropped, {**ran, "loss.name": "focal"}) is None


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("missing", "is not a directory"),
        ("empty", "holds no readable sweep.json"),
    ],
)
def test_an_unreadable_previous_run_dir_is_one_line_naming_the_field_and_the_fix(tmp_path, where, said):
    (tmp_path / "empty").mkdir()
    spec = _spec(NEW_SPACE, warm_start={"from_run": str(tmp_path / where)})
    with pytest.raises(SpecError) as caught:
        previous_sweep(spec)
    assert caught.value.problems == [
        f"warm_start.from_run: '{tmp_path / where}' {said}; pass the run dir of an earlier sweep (runs/NAME/TIME), "
        "or warm_start.from_run=null to start cold"
    ]


def test_a_previous_sweep_of_another_objective_is_refused(tmp_path):
    spec = _spec(
        NEW_SPACE,
        objective={"metric": "val_loss", "direction": "minimize"},
        warm_start={"from_run": str(_previous_sweep(tmp_path))},
    )
    with pytest.raises(SpecError, match="optimized val_accuracy \\(maximize\\), this sweep val_loss \\(minimize\\)"):
        previous_sweep(spec)


def test_the_new_parent_run_links_the_previous_one_both_ways(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = MlflowRecorder(uri, "s", tmp_path / "artifacts")
    first.start_sweep("s", {}, {}, {})
    first.close(interrupted=False)
    prev_dir = _previous_sweep(tmp_path)
    state = json.loads((prev_dir / STATE_FILE).read_text())
    (prev_dir / STATE_FILE).write_text(json.dumps({**state, "parent_run_id": first.parent_id}))
    spec = _spec(NEW_SPACE, warm_start={"from_run": str(prev_dir)}, tracking={"uri": uri})
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    recorder = record.open_record(spec, new_dir, False, "sqlite:///x", {}, previous_sweep(spec))
    client = MlflowClient(uri)
    tags = client.get_run(recorder.parent_id).data.tags
    assert tags["sweep.previous_run_id"] == first.parent_id
    assert tags["sweep.previous_run_dir"] == str(prev_dir.resolve())
    assert client.get_run(first.parent_id).data.tags["sweep.next_run_id"] == recorder.parent_id
    recorder.close(interrupted=False)


def test_a_previous_study_that_cannot_be_read_is_one_line(tmp_path):
    prev_dir = _previous_sweep(tmp_path)
    gone = f"sqlite:///{tmp_path}/gone.db"
    state = json.loads((prev_dir / STATE_FILE).read_text())
    (prev_dir / STATE_FILE).write_text(json.dumps({**state, "storage": gone}))
    spec = _spec(NEW_SPACE, warm_start={"from_run": str(prev_dir)})
    with pytest.raises(SpecError) as caught:
        read(previous_sweep(spec), spec, f"sqlite:///{tmp_path}/new.db")
    assert caught.value.problems[0].startswith(
        f"warm_start.from_run: the study of '{prev_dir}' ({gone}) cannot be read ("
    )
