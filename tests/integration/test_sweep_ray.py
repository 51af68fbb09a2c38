"""Real Ray Tune + real Optuna + real MLflow on tiny models: the run tree and the statuses."""

import optuna
import pytest
import yaml

from sweep.runner import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import runs_of
from trainers.config import trial_config_from_dict

pytestmark = pytest.mark.integration

STATE_TO_STATUS = {"COMPLETE": {"completed"}, "PRUNED": {"pruned"}, "FAIL": {"diverged", "failed", "stopped", "killed"}}


def _spec(tmp_path, **parts):
    base = {
        "name": "it",
        "trial": {
            "model": {"name_or_path": "tiny-bert"},
            "adaptation": {"method": "full"},
            "data": {"max_rows": 240, "max_length": 24},
            "optim": {"max_steps": 9, "batch_size": 8, "schedule": "constant", "max_grad_norm": None},
            "eval": {"eval_every_steps": 3},
        },
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "budget": {"num_trials": 5, "max_concurrent_trials": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "execution": {"runs_dir": str(tmp_path / "runs"), "dashboard": False},
    }
    return validate_spec({**base, **parts})


def _check_tree(result):
    runs = runs_of(result.tracking_uri, result.experiment)
    assert all(r.info.status != "RUNNING" for r in runs)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert parents[0].info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in trials)
    storage = yaml.safe_load((result.run_dir / "sweep.json").read_text())["storage"]
    study = optuna.load_study(study_name="it", storage=storage)
    assert len(trials) == len(study.trials) == len(result.trials)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trials}
    for t in study.trials:
        assert by_number[t.number].data.tags["trial.status"] in STATE_TO_STATUS[t.state.name], t.number
    return runs, trials, study


def test_sweep_on_ray_records_one_parent_and_one_child_per_trial(tmp_path):
    spec = _spec(
        tmp_path,
        space={"optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-3, 1e-5, 1e12, 3e-4]}},
        sampler={"kind": "grid", "seed": 0},
        pruner={"kind": "median", "num_startup_trials": 1, "warmup_steps": 0},
    )
    result = run_sweep(spec, echo=lambda line: None)
    assert not result.interrupted and sum(result.counts.values()) == 5
    _, trials, study = _check_tree(result)
    statuses = {r.data.params["optim.learning_rate"]: r.data.tags["trial.status"] for r in trials}
    assert statuses["1000000000000.0"] == "diverged"
    assert study.best_trial.params["optim.learning_rate"] != 1e12  # a diverged trial is never best
    assert result.best is not None and result.best.status == "completed"
    best_config = trial_config_from_dict(yaml.safe_load((result.run_dir / "best" / "best_config.yaml").read_text()))
    assert best_config.optim.learning_rate == study.best_trial.params["optim.learning_rate"]
    assert (result.run_dir / "best" / "model" / "config.json").is_file()
    assert not any((result.run_dir / "models").iterdir())  # only the best model is kept
    for t in study.trials:
        if t.state.name == "PRUNED":
            assert t.intermediate_values  # pruned trials keep what they reported


def test_k_fold_sweep_with_wilcoxon(tmp_path):
    trial = {
        "model": {"name_or_path": "tiny-bert"},
        "adaptation": {"method": "full"},
        "data": {"max_rows": 150, "max_length": 24},
        "split": {"num_folds": 3},
        "optim": {"max_steps": 4, "batch_size": 8},
        "eval": {"eval_every_steps": 4},
    }
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}},
        pruner={"kind": "wilcoxon", "p_threshold": 0.5},
        sampler={"kind": "random", "seed": 0},
        budget={"num_trials": 4, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    runs, trials, study = _check_tree(result)
    for t in study.trials:
        assert set(t.intermediate_values) <= {0, 1, 2}
        if t.state.name == "COMPLETE":
            assert set(t.intermediate_values) == {0, 1, 2}
    folds = [r for r in runs if r.data.tags.get("sweep.role") == "fold"]
    trial_ids = {r.info.run_id for r in trials}
    assert folds and all(r.data.tags["mlflow.parentRunId"] in trial_ids for r in folds)
    completed = [r for r in trials if r.data.tags["trial.status"] == "completed"]
    for run in completed:
        assert sum(f.data.tags["mlflow.parentRunId"] == run.info.run_id for f in folds) == 3


def test_ctrl_c_ends_runs_killed_and_resume_finishes_the_budget(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    spec = tmp_path / "sig.yaml"
    spec.write_text(
        "name: sig\n"
        "trial: {model: {name_or_path: tiny-bert}, adaptation: {method: full}, data: {max_rows: 200, max_length: 24},"
        " optim: {max_steps: 240, batch_size: 8}, eval: {eval_every_steps: 40}}\n"
        "space:\n  optim.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
        "pruner: {kind: none}\nbudget: {num_trials: 3, max_concurrent_trials: 1}\nexecution: {dashboard: false}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "sweep", "run", str(spec)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("[1/3]"):
            time.sleep(1.0)  # the second trial is under way
            proc.send_signal(signal.SIGINT)
            break
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out
    assert "interrupted: runs ended as KILLED. Resume with: sweep resume runs/sig/" in out
    uri = f"sqlite:///{tmp_path}/runs/mlflow.db"
    runs = runs_of(uri, "sig")
    assert all(r.info.status != "RUNNING" for r in runs)
    assert {r.info.run_name: r.info.status for r in runs}["sig"] == "KILLED"
    assert "KILLED" in {r.info.status for r in runs if r.data.tags.get("sweep.role") == "trial"}

    run_dir = next((tmp_path / "runs" / "sig").iterdir())
    resumed = subprocess.run(
        [sys.executable, "-m", "sweep", "resume", str(run_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    runs = runs_of(uri, "sig")
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    # the killed trial does not count against the budget: three trials complete in all
    assert sorted(r.data.tags["trial.status"] for r in trials) == ["completed", "completed", "completed", "killed"]
    assert all(r.info.status != "RUNNING" for r in trials)


def test_asha_alternative_runs_on_ray(tmp_path):
    spec = _spec(
        tmp_path,
        space={"optim.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}},
        sampler={"kind": "random", "seed": 1},
        pruner={"kind": "asha", "min_resource": 3, "reduction_factor": 2},
        budget={"num_trials": 4, "max_concurrent_trials": 2},
    )
    result = run_sweep(spec, echo=lambda line: None)
    assert sum(result.counts.values()) == 4 and set(result.counts) <= {"completed", "pruned", "diverged"}
    _check_tree(result)


def test_trials_the_trial_rejects_fail_with_their_reason(tmp_path):
    spec = _spec(
        tmp_path,
        space={
            "model.num_layers": {"type": "fixed", "value": 1},
            "model.num_trainable_layers": {"type": "categorical", "choices": [1, 3]},
        },
        sampler={"kind": "grid"},
        budget={"num_trials": 2, "max_concurrent_trials": 2},
    )
    lines: list[str] = []
    result = run_sweep(spec, echo=lines.append)
    assert sorted(t.status for t in result.trials) == ["completed", "failed"]
    failed = next(t for t in result.trials if t.status == "failed")
    assert failed.error == "model.num_trainable_layers: 3 > model.num_layers 1; it must be <= the kept layers"
    assert any(f"error: {failed.error}" in line for line in lines)
    _, trials, study = _check_tree(result)
    run = next(r for r in trials if r.data.tags["trial.status"] == "failed")
    assert run.data.tags["trial.error"] == failed.error and run.info.status == "FAILED"
    assert next(t for t in study.trials if t.state.name == "FAIL").user_attrs["error"] == failed.error


def test_time_budget_stops_trials_and_records_them_as_stopped(tmp_path):
    trial = {
        "model": {"name_or_path": "tiny-bert"},
        "adaptation": {"method": "full"},
        "data": {"max_rows": 200, "max_length": 24},
        "optim": {"max_steps": 2000, "batch_size": 8},
        "eval": {"eval_every_steps": 20},
    }
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"seed": {"type": "categorical", "choices": [1, 2]}},
        pruner={"kind": "none"},
        budget={"num_trials": 2, "max_concurrent_trials": 1, "time_budget_s": 12},
    )
    result = run_sweep(spec, echo=lambda line: None)
    assert result.counts == {"stopped": 1}
    _, trials, study = _check_tree(result)
    assert trials[0].data.tags["trial.status"] == "stopped" and trials[0].info.status == "FINISHED"
    assert study.trials[0].user_attrs["status"] == "stopped"
