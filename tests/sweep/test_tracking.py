"""The MLflow layout: one parent per sweep, nested trial runs (and fold runs), statuses, nothing left RUNNING."""

from mlflow.tracking import MlflowClient

from sweep.status import TrialStatus
from sweep.tracking import MlflowRecorder, flatten, runs_of


def _recorder(tmp_path):
    return MlflowRecorder(f"sqlite:///{tmp_path}/mlflow.db", "exp", tmp_path / "artifacts")


def test_parent_and_nested_trial_runs_with_statuses(tmp_path):
    rec = _recorder(tmp_path)
    parent = rec.start_sweep(
        "demo", {"trial": {"optim": {"max_steps": 40}}}, {"sweep.code_version": "abc"}, {"name": "demo"}
    )
    for key, number in (("a", 0), ("b", 1), ("c", 2)):
        rec.start_trial(key, number, {"optim.learning_rate": 1e-3 * (number + 1), "loss.name": "focal"})
    assert rec.start_trial("a", 0, {}) == rec.trial_runs["a"]  # a Ray restart reuses the run
    rec.log_report("a", 10, {"val_loss": 0.7, "train_loss": 0.8})
    rec.log_report("a", 20, {"val_loss": 0.5, "train_loss": 0.6})
    rec.log_report("b", 10, {"val_loss": 0.9, "train_loss": 0.9})
    rec.end_trial("a", TrialStatus.COMPLETED, {"trial.step_reached": "20"}, {"num_steps": 20})
    rec.end_trial("b", TrialStatus.PRUNED, {"trial.step_reached": "10"}, {})
    rec.end_trial("c", TrialStatus.DIVERGED, {"trial.step_reached": "3"}, {})
    rec.finish_sweep({"best_value": 0.5, "num_trials": 3}, {"sweep.best_trial": "0"})
    rec.close(interrupted=False)

    runs = {r.info.run_name: r for r in runs_of(rec.uri, "exp")}
    assert set(runs) == {"demo", "trial 0 · completed", "trial 1 · pruned@10", "trial 2 · diverged@3"}
    runs = {name.split(" · ")[0].replace(" ", "-"): r for name, r in runs.items()}  # trial-0, trial-1, ...
    sweep = runs["demo"]
    assert sweep.info.run_id == parent and sweep.info.status == "FINISHED"
    assert sweep.data.tags["sweep.role"] == "sweep" and sweep.data.params["trial.optim.max_steps"] == "40"
    assert sweep.data.metrics["best_value"] == 0.5
    for name, status in (("trial-0", "completed"), ("trial-1", "pruned"), ("trial-2", "diverged")):
        run = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["sweep.role"] == "trial"
        assert run.data.tags["trial.status"] == status
        assert run.info.status == "FINISHED"
    assert runs["trial-0"].data.params == {"optim.learning_rate": "0.001", "loss.name": "focal"}
    history = MlflowClient(rec.uri).get_metric_history(runs["trial-0"].info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(10, 0.7), (20, 0.5)]
    artifacts = {a.path for a in MlflowClient(rec.uri).list_artifacts(parent)}
    assert {"spec.yaml", "summary.json"} <= artifacts


def test_interrupted_sweep_leaves_no_run_running(tmp_path):
    rec = _recorder(tmp_path)
    rec.start_sweep("demo", {}, {}, {})
    rec.start_trial("a", 0, {"x": 1})
    rec.start_trial("b", 1, {"x": 2})
    rec.end_trial("a", TrialStatus.COMPLETED, {}, {})
    rec.close(interrupted=True)
    runs = {r.info.run_name: r for r in runs_of(rec.uri, "exp")}
    assert runs["demo"].info.status == "KILLED"
    assert (
        runs["trial 1 · killed"].info.status == "KILLED"
        and runs["trial 1 · killed"].data.tags["trial.status"] == "killed"
    )
    assert runs["trial 0 · completed"].info.status == "FINISHED"


def test_fold_runs_nest_under_their_trial(tmp_path):
    rec = _recorder(tmp_path)
    rec.start_sweep("kfold", {}, {}, {})
    trial_run = rec.start_trial("a", 0, {})
    for fold in range(3):
        rec.log_fold("a", fold, {"val_accuracy": 0.5 + fold / 10})
    rec.end_trial("a", TrialStatus.COMPLETED, {}, {})
    rec.close(interrupted=False)
    folds = [r for r in runs_of(rec.uri, "exp") if r.data.tags.get("sweep.role") == "fold"]
    assert sorted(r.info.run_name for r in folds) == ["trial 0 · fold 0", "trial 0 · fold 1", "trial 0 · fold 2"]
    assert all(r.data.tags["mlflow.parentRunId"] == trial_run and r.info.status == "FINISHED" for r in folds)


def test_resume_reopens_parent_and_knows_its_trials(tmp_path):
    rec = _recorder(tmp_path)
    parent = rec.start_sweep("demo", {}, {}, {})
    rec.start_trial("a", 0, {})
    rec.close(interrupted=True)
    again = _recorder(tmp_path)
    again.resume_sweep(parent)
    assert again.trial_runs == {"a": rec.trial_runs["a"]}
    assert MlflowClient(rec.uri).get_run(parent).info.status == "RUNNING"
    again.close(interrupted=False)
    assert MlflowClient(rec.uri).get_run(parent).info.status == "FINISHED"


def test_resume_after_a_killed_driver_settles_each_trial_run_as_the_study_says(tmp_path):
    rec = _recorder(tmp_path)
    parent = rec.start_sweep("demo", {}, {}, {})
    rec.start_trial("done", 0, {"optim.learning_rate": 0.1})
    rec.end_trial("done", TrialStatus.COMPLETED, {}, {})
    rec.start_trial("running", 1, {})  # the driver is SIGKILLed: no close
    rec.start_trial("told", 2, {})  # the study heard it completed, MLflow not yet
    again = _recorder(tmp_path)
    again.resume_sweep(parent)
    again.settle_trial("done", 0, {}, TrialStatus.COMPLETED, 9)
    again.settle_trial("running", 1, {}, TrialStatus.KILLED, 4)
    again.settle_trial("told", 2, {}, TrialStatus.COMPLETED, 9)
    again.settle_trial("3", 3, {"optim.learning_rate": 0.2}, TrialStatus.KILLED, None)  # killed before its run
    again.close(interrupted=False)
    runs = {r.data.tags["optuna.trial_number"]: r for r in runs_of(rec.uri, "exp") if r.info.run_id != parent}
    assert sorted(runs) == ["0", "1", "2", "3"]  # one run per trial, none twice
    got = {n: (r.info.status, r.data.tags["trial.status"]) for n, r in runs.items()}
    assert got == {
        "0": ("FINISHED", "completed"),
        "1": ("KILLED", "killed"),
        "2": ("FINISHED", "completed"),
        "3": ("KILLED", "killed"),
    }
    assert runs["1"].data.tags["trial.step_reached"] == "4" and runs["3"].data.params["optim.learning_rate"] == "0.2"
    assert "trial.step_reached" not in runs["0"].data.tags  # already right: left as it was


def test_flatten_nests_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}) == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]"}


def test_one_registered_version_per_sweep_and_trial(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweep.tracking import register_candidate, registered_versions

    rec = _recorder(tmp_path)
    parent = rec.start_sweep("demo", {}, {}, {})
    for key in ("a", "b"):
        rec.start_trial(key, 0, {})
        model = tmp_path / key
        model.mkdir()
        (model / "adapter_config.json").write_text("{}")
        rec.log_artifacts(key, model, "model")
    first = register_candidate(rec.uri, "m", rec.trial_runs["a"], parent, {"x": "1"}, "d")
    assert register_candidate(rec.uri, "m", rec.trial_runs["a"], parent, {"x": "1"}, "d") == first == ("m", "1")
    assert len(registered_versions(rec.uri, "m")) == 1
    # a resumed sweep with a better trial registers that one, and the alias follows
    assert register_candidate(rec.uri, "m", rec.trial_runs["b"], parent, {}, "d") == ("m", "2")
    client = MlflowClient(rec.uri)
    assert str(client.get_model_version_by_alias("m", "candidate").version) == "2"
    register_candidate(rec.uri, "m", rec.trial_runs["a"], parent, {}, "d")  # asking for the old one moves nothing
    assert str(client.get_model_version_by_alias("m", "candidate").version) == "2"


def test_a_store_module_mlflow_moved_only_loses_the_head_start(monkeypatch):
    """load_store imports MLflow's store modules by their path (a layout, not an API): one that moved is
    no error; the store then loads when the record opens."""
    import importlib

    from sweep import tracking

    asked = []

    def moved(name, package=None):
        asked.append(name)
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", moved)
    tracking.load_store("sqlite:///nowhere.db")
    assert asked == ["mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils", "alembic.command"]


SWEEP_AT = """
import sys, time
from pathlib import Path
from sweep.status import TrialStatus
from sweep.tracking import MlflowRecorder
uri, name, go, artifacts = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
print("ready", flush=True)
while not go.exists():  # the four start together
    time.sleep(0.001)
rec = MlflowRecorder(uri, "shared", artifacts)
rec.start_sweep(name, {"who": name}, {}, {"name": name})
for number in range(3):
    key = f"{name}-{number}"
    rec.start_trial(key, number, {"optim.learning_rate": number})
    for step in (1, 2):
        rec.log_report(key, step, {"val_loss": 1.0 / step})
    rec.end_trial(key, TrialStatus.COMPLETED, {}, {"num_steps": 2})
rec.finish_sweep({"num_trials": 3}, {})
rec.close(interrupted=False)
"""


def test_four_sweeps_starting_at_once_on_one_new_sqlite_store_are_all_recorded(tmp_path):
    """Issue 33, finding 6: opening a new SQLite store makes its tables; four sweeps opening the default
    record at once each ran MLflow's migrations and three failed ("duplicate column name"). Under the
    store's creation lock all four record everything, each run once."""
    import subprocess
    import sys

    uri, go = f"sqlite:///{tmp_path}/runs/mlflow.db", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SWEEP_AT, uri, name, str(go), str(tmp_path / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in "abcd"
    ]
    assert [p.stdout.readline() for p in procs] == ["ready\n"] * 4  # MLflow imported in all four
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(errors)
    runs = runs_of(uri, "shared")
    assert sorted(r.info.run_name for r in runs if r.data.tags.get("sweep.role") == "sweep") == list("abcd")
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert len(trials) == 12 and all(r.info.status == "FINISHED" for r in trials)
    assert sorted(r.data.tags["trial.status"] for r in trials) == ["completed"] * 12
