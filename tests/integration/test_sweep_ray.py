"""Real Ray Tune + real Optuna + real MLflow on tiny models: the run tree, the statuses, and pruning by
every pruner kind, checked against Optuna's own pruner fed the same reports."""

import json

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray.tune import ExperimentAnalysis

from sweep.run import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import runs_of
from trainers.config import trial_config_from_dict

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_ray")]

STATE_TO_STATUS = {"COMPLETE": {"completed"}, "PRUNED": {"pruned"}, "FAIL": {"diverged", "failed", "stopped", "killed"}}
GOOD_THEN_HOPELESS = [3e-3, 1e-3, 1.0, 3.0]  # grid seed 5 runs them in this order; 1.0 and 3.0 go nowhere
TRIAL = {
    "model": {"name_or_path": "tiny-bert"},
    "adaptation": {"method": "full"},
    "data": {"max_rows": 240, "max_length": 24},
    "optim": {"max_steps": 9, "batch_size": 8, "schedule": "constant"},
    "eval": {"eval_every_steps": 3},
}


def _spec(tmp_path, **parts):
    base = {
        "name": "it",
        "trial": TRIAL,
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "budget": {"num_trials": 5, "max_concurrent_trials": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "execution": {"runs_dir": str(tmp_path / "runs"), "dashboard": False, "verdict": False},
    }
    return validate_spec({**base, **parts})


def _check_tree(result):
    """One parent, one child per Optuna trial, the same status in Optuna, MLflow and the result."""
    runs = runs_of(result.tracking_uri, result.experiment)
    assert all(r.info.status != "RUNNING" for r in runs)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert parents[0].info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert all(r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in trials)
    storage = json.loads((result.run_dir / "sweep.json").read_text())["storage"]
    study = optuna.load_study(study_name=result.experiment, storage=storage)
    assert len(trials) == len(study.trials) == len(result.trials)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trials}
    ours = {t.number: t for t in result.trials}
    for t in study.trials:
        status = by_number[t.number].data.tags["trial.status"]
        assert status in STATE_TO_STATUS[t.state.name], t.number
        assert status == t.user_attrs["status"] == ours[t.number].status, t.number
    return runs, trials, study


def _ray_ends(result):
    """Per Ray trial id: its last reported step, and whether it sent its final outcome report."""
    analysis = ExperimentAnalysis(str(result.run_dir.resolve() / "tune"))
    out = {}
    for trial in analysis.trials:
        frame = analysis.trial_dataframes[trial.trial_id]
        steps = frame["step"].dropna() if "step" in frame else []
        out[trial.trial_id] = (
            int(max(steps)) if len(steps) else None,
            "outcome" in frame and frame["outcome"].notna().any(),
        )
    return out


def _replay(study, reference_pruner, last_step):
    """Per trial number: the step where Optuna's own pruner, fed the same reports in the same order,
    first says prune (None: never; a prune at the last step does not count, the trial is done)."""
    ref = optuna.create_study(study_name=study.study_name, direction=study.direction, pruner=reference_pruner)
    decisions = {}
    for t in sorted(study.trials, key=lambda t: t.number):
        trial = ref.ask()
        pruned_at = None
        for step, value in sorted(t.intermediate_values.items()):
            trial.report(value, step)
            if trial.should_prune() and step < last_step:
                pruned_at = step
                break
        if pruned_at is not None:
            ref.tell(trial, state=TrialState.PRUNED)
        elif t.state == TrialState.COMPLETE:
            ref.tell(trial, t.value)
        else:
            ref.tell(trial, state=TrialState.FAIL)
        decisions[t.number] = pruned_at
    return decisions


def _assert_pruning_everywhere(result, study, trials, expected, last_step):
    """The pruned trials are exactly those the reference prunes, at its step, in Ray, Optuna and MLflow."""
    assert any(step is not None for step in expected.values()), "nothing to prune: the case is trivial"
    ends = _ray_ends(result)
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in trials}
    for t in study.trials:
        ray_step, sent_outcome = ends[t.user_attrs["ray_trial_id"]]
        if expected[t.number] is None:
            assert t.state == TrialState.COMPLETE, t.number
            assert (ray_step, sent_outcome) == (last_step, True), t.number
            assert runs[t.number].data.tags["trial.status"] == "completed"
        else:
            assert t.state == TrialState.PRUNED, t.number
            assert t.last_step == expected[t.number] == ray_step, t.number
            assert not sent_outcome  # Ray stopped it before its end
            assert runs[t.number].data.tags["trial.status"] == "pruned"
            assert runs[t.number].data.tags["trial.step_reached"] == str(ray_step)


@pytest.mark.parametrize(
    ("pruner", "reference"),
    [
        ({"kind": "median", "num_startup_trials": 1}, lambda: optuna.pruners.MedianPruner(n_startup_trials=1)),
        (
            {"kind": "percentile", "percentile": 50.0, "num_startup_trials": 1},
            lambda: optuna.pruners.PercentilePruner(50.0, n_startup_trials=1),
        ),
        (
            {"kind": "successive_halving", "min_resource": 3, "reduction_factor": 2},
            lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=2),
        ),
    ],
    ids=lambda p: p["kind"] if isinstance(p, dict) else "",
)
def test_pruner_prunes_the_hopeless_trials_on_ray(tmp_path, pruner, reference):
    spec = _spec(
        tmp_path,
        space={"optim.learning_rate": {"type": "categorical", "choices": GOOD_THEN_HOPELESS}},
        sampler={"kind": "grid", "seed": 5},
        pruner=pruner,
        budget={"num_trials": 4, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, trials, study = _check_tree(result)
    assert [t.params["optim.learning_rate"] for t in study.trials] == GOOD_THEN_HOPELESS
    _assert_pruning_everywhere(result, study, trials, _replay(study, reference(), 9), 9)


def test_hyperband_prunes_on_ray_with_the_trials_last_step_as_max_resource(tmp_path):
    choices = [3e-3, 1e-3, 3e-4, 1.0, 3.0, 2.0]
    spec = _spec(
        tmp_path,
        space={"optim.learning_rate": {"type": "categorical", "choices": choices}},
        sampler={"kind": "grid", "seed": 5},
        pruner={"kind": "hyperband", "min_resource": 3, "reduction_factor": 3},
        budget={"num_trials": 6, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, trials, study = _check_tree(result)
    reference = optuna.pruners.HyperbandPruner(min_resource=3, max_resource=9, reduction_factor=3)
    _assert_pruning_everywhere(result, study, trials, _replay(study, reference, 9), 9)


def test_wilcoxon_prunes_k_fold_trials_on_ray(tmp_path):
    trial = {**TRIAL, "split": {"num_folds": 4}, "data": {"max_rows": 160, "max_length": 24}}
    trial["optim"] = {**TRIAL["optim"], "max_steps": 6}
    trial["eval"] = {"eval_every_steps": 6}
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"optim.learning_rate": {"type": "categorical", "choices": GOOD_THEN_HOPELESS}},
        sampler={"kind": "grid", "seed": 5},
        pruner={"kind": "wilcoxon", "p_threshold": 0.5},
        budget={"num_trials": 4, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    runs, trials, study = _check_tree(result)
    _assert_pruning_everywhere(
        result, study, trials, _replay(study, optuna.pruners.WilcoxonPruner(p_threshold=0.5), 3), 3
    )
    folds = [r for r in runs if r.data.tags.get("sweep.role") == "fold"]
    by_run = {r.info.run_id: int(r.data.tags["optuna.trial_number"]) for r in trials}
    for t in study.trials:  # a fold run per fold the trial reported
        assert sum(by_run[f.data.tags["mlflow.parentRunId"]] == t.number for f in folds) == len(t.intermediate_values)


def test_asha_prunes_on_ray_at_its_rungs(tmp_path):
    choices = [3e-3, 1e-3, 3e-4, 1.0, 3.0, 2.0]
    spec = _spec(
        tmp_path,
        space={"optim.learning_rate": {"type": "categorical", "choices": choices}},
        sampler={"kind": "grid", "seed": 5},
        pruner={"kind": "asha", "min_resource": 3, "reduction_factor": 2},
        budget={"num_trials": 6, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, trials, study = _check_tree(result)
    ends = _ray_ends(result)
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in trials}
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and {t.params["optim.learning_rate"] for t in pruned} <= {1.0, 3.0, 2.0}
    for t in study.trials:
        ray_step, sent_outcome = ends[t.user_attrs["ray_trial_id"]]
        if t.state == TrialState.PRUNED:
            assert t.last_step == ray_step in (3, 6) and not sent_outcome  # ASHA's rungs below max_t 9
            assert runs[t.number].data.tags["trial.status"] == "pruned"
        else:
            assert (ray_step, sent_outcome) == (9, True) and t.state == TrialState.COMPLETE


def test_a_trial_that_finished_its_steps_is_never_pruned_without_max_steps_in_the_spec(tmp_path):
    # the template leaves optim.max_steps out: TrialConfig's default (60) is the last step; the only
    # report is there, and the median pruner would prune the hopeless trials at it
    trial = {k: v for k, v in TRIAL.items() if k != "optim"} | {
        "optim": {"batch_size": 8},
        "eval": {"eval_every_steps": 60},
    }
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"optim.learning_rate": {"type": "categorical", "choices": GOOD_THEN_HOPELESS}},
        sampler={"kind": "grid", "seed": 5},
        pruner={"kind": "median", "num_startup_trials": 1},
        budget={"num_trials": 4, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, _, study = _check_tree(result)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(t.last_step == 60 for t in study.trials)
    ref = optuna.create_study(study_name="it", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    said_prune = []
    for t in study.trials:  # Optuna's pruner alone would have pruned a finished trial
        trial_ = ref.ask()
        trial_.report(t.intermediate_values[60], 60)
        said_prune.append(trial_.should_prune())
        ref.tell(trial_, t.value)
    assert any(said_prune)


@pytest.mark.parametrize(
    "pruner",
    [
        {"kind": "asha", "min_resource": 6, "reduction_factor": 2},
        {"kind": "hyperband", "min_resource": 6, "reduction_factor": 2},
    ],
    ids=["asha", "hyperband"],
)
def test_epoch_based_trials_prune_at_rungs_and_finish_at_their_last_step(tmp_path, pruner):
    # 1 epoch of 192 training rows in batches of 8 = 24 steps: ASHA's max_t and Hyperband's max resource
    trial = {**TRIAL, "optim": {"max_steps": None, "num_epochs": 1.0, "batch_size": 8}, "eval": {"eval_every_steps": 6}}
    choices = [3e-3, 1e-3, 3e-4, 1.0, 3.0, 2.0]
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"optim.learning_rate": {"type": "categorical", "choices": choices}},
        sampler={"kind": "grid", "seed": 5},
        pruner=pruner,
        budget={"num_trials": 6, "max_concurrent_trials": 1},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, _, study = _check_tree(result)
    ends = _ray_ends(result)
    states = {t.number: t.state for t in study.trials}
    assert TrialState.PRUNED in states.values()
    for t in study.trials:
        ray_step, sent_outcome = ends[t.user_attrs["ray_trial_id"]]
        if sent_outcome:  # it ran all 24 steps: never recorded as pruned
            assert ray_step == 24 and t.state == TrialState.COMPLETE, t.number
        else:
            assert t.state == TrialState.PRUNED and t.last_step in (6, 12), t.number


def test_sweep_on_ray_records_one_parent_and_one_child_per_trial(tmp_path):
    spec = _spec(
        tmp_path,
        trial={**TRIAL, "optim": {**TRIAL["optim"], "max_grad_norm": None}},
        space={"optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-3, 1e-5, 1e12, 3e-4]}},
        sampler={"kind": "grid", "seed": 0},
        pruner={"kind": "median", "num_startup_trials": 1, "warmup_steps": 0},
        budget={"num_trials": 5, "max_concurrent_trials": 2},
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
    # Tune's CSV and JSON logs per trial, not its TensorBoardX events (that logger imports torch in the driver)
    trial_dirs = list((result.run_dir / "tune").glob("trial_*"))
    assert len(trial_dirs) == 5
    assert all((d / "progress.csv").is_file() and (d / "result.json").is_file() for d in trial_dirs)
    assert not list((result.run_dir / "tune").rglob("events.out.tfevents*"))
    # the data check's split, saved in the run dir, is handed to every trial (which loads it: test_loop)
    assert (result.run_dir / "split.npz").is_file()
    handed = {json.loads((d / "params.json").read_text())["split_file"] for d in trial_dirs}
    assert handed == {str((result.run_dir / "split.npz").resolve())}
    parent = next(
        r for r in runs_of(result.tracking_uri, result.experiment) if r.data.tags.get("sweep.role") == "sweep"
    )
    assert {r.data.tags["split.fingerprint"] for r in trials if "split.fingerprint" in r.data.tags} == {
        parent.data.tags["split.fingerprint"]
    }


def test_grid_exhaustion_ends_the_sweep_early_with_every_point_once(tmp_path):
    spec = _spec(
        tmp_path,
        space={"optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-3]}},
        sampler={"kind": "grid", "seed": 0},
        pruner={"kind": "none"},
        budget={"num_trials": 5, "max_concurrent_trials": 2},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, _, study = _check_tree(result)
    assert sorted(t.params["optim.learning_rate"] for t in study.trials) == [1e-3, 3e-3]
    assert result.counts == {"completed": 2}


def test_best_lora_adapter_is_published_with_labels_and_logged_to_mlflow(tmp_path):
    trial = {**TRIAL, "adaptation": {"method": "lora", "r": 4}}
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-2]}},
        sampler={"kind": "grid", "seed": 0},
        pruner={"kind": "none"},
        budget={"num_trials": 2, "max_concurrent_trials": 2},
    )
    result = run_sweep(spec, echo=lambda line: None)
    best = result.run_dir / "best"
    assert {p.name for p in (best / "model").iterdir()} >= {"adapter_config.json", "labels.json"}
    assert json.loads((best / "model" / "labels.json").read_text()) == {"0": "negative", "1": "positive"}
    run = next(
        r
        for r in runs_of(result.tracking_uri, "it")
        if r.data.tags.get("optuna.trial_number") == str(result.best.number)
    )
    client = MlflowClient(result.tracking_uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"best_config.yaml", "model"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {
        "model/adapter_config.json",
        "model/labels.json",
    }


def test_regression_sweep_runs_end_to_end_on_its_demo_data(tmp_path):
    trial = {
        "task": "regression",
        "model": {"name_or_path": "tiny-bert"},
        "adaptation": {"method": "full"},
        "data": {"max_length": 24},
        "optim": {"max_steps": 40, "batch_size": 32},
        "eval": {"eval_every_steps": 20},
    }
    spec = _spec(
        tmp_path,
        trial=trial,
        space={
            "optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-5]},
            "loss.name": {"type": "categorical", "choices": ["mse", "huber"]},
        },
        objective={"metric": "val_mse", "direction": "minimize"},
        sampler={"kind": "grid", "seed": 0},
        pruner={"kind": "none"},
        budget={"num_trials": 4, "max_concurrent_trials": 2},
    )
    result = run_sweep(spec, echo=lambda line: None)
    _, trials, study = _check_tree(result)
    assert result.counts == {"completed": 4}
    assert study.best_trial.params["optim.learning_rate"] == 3e-3
    metrics = trials[0].data.metrics
    assert {"val_mse", "val_mae", "val_pearson", "train_loss"} <= set(metrics)


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


def test_a_crashing_sweep_ends_its_runs_failed(tmp_path, monkeypatch):
    from sweep.ray import tuner as ray_tuner

    def crash(spec, bridge, observer, **kw):
        bridge.ask("t1")
        observer.trial_started("t1", {"optim.learning_rate": 0.1})
        raise RuntimeError("boom")  # our bug or Ray's, mid-sweep

    monkeypatch.setattr(ray_tuner, "run_tuner", crash)
    spec = _spec(tmp_path, space={"optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1}})
    with pytest.raises(RuntimeError, match="boom"):
        run_sweep(spec, echo=lambda line: None)
    runs = {r.data.tags["sweep.role"]: r for r in runs_of(f"sqlite:///{tmp_path}/mlflow.db", "it")}
    assert runs["sweep"].info.status == "FAILED"
    assert runs["trial"].info.status == "FAILED" and runs["trial"].data.tags["trial.status"] == "failed"


def test_time_budget_stops_trials_and_records_them_as_stopped(tmp_path):
    trial = {**TRIAL, "optim": {"max_steps": 100000, "batch_size": 8}, "eval": {"eval_every_steps": 20}}
    spec = _spec(
        tmp_path,
        trial=trial,
        space={"seed": {"type": "categorical", "choices": [1, 2]}},
        pruner={"kind": "none"},
        # (a trial worker takes 8-10 s to start on 2 busy cores: the budget leaves it time to start)
        budget={"num_trials": 2, "max_concurrent_trials": 1, "time_budget_s": 16},
    )
    result = run_sweep(spec, echo=lambda line: None)
    assert result.counts == {"stopped": 1}  # 100000 steps never end within the budget
    assert result.stop_reason == "the time budget (budget.time_budget_s=16) ran out: 1 of 2 trials never started"
    _, trials, study = _check_tree(result)
    assert trials[0].data.tags["trial.status"] == "stopped" and trials[0].info.status == "FINISHED"
    assert study.trials[0].user_attrs["status"] == "stopped"


def test_the_workers_of_a_local_ray_allocate_with_rays_jemalloc():
    """ray_session sets RAY_LD_PRELOAD_ON_WORKERS (unless the user did): a trial's worker has the
    jemalloc Ray ships mapped, in place of glibc's malloc."""
    import os

    import ray

    @ray.remote(num_cpus=0)
    def allocator() -> bool:
        with open("/proc/self/maps") as maps:
            return "libjemalloc" in maps.read()

    assert os.environ["RAY_LD_PRELOAD_ON_WORKERS"] == "1"
    assert ray.get(allocator.remote()) is True


def test_the_raylet_of_a_local_ray_retries_its_sockets_every_50_ms():
    """ray_session starts the raylet with Ray's socket retry at 50 ms (Ray's default, 1 s, made every
    other start wait a second for the raylet's own object store), within the same 10 s; Ray's workers
    read the same."""
    import os

    import psutil
    import ray

    from sweep.ray.session import CONNECT_RETRY

    if any(os.environ.get(key, value) != value for key, value in CONNECT_RETRY.items()):
        pytest.skip("this shell sets Ray's connection retry itself")  # (the sweep keeps a user's setting)

    def is_raylet(p: psutil.Process) -> bool:
        try:
            return p.name() == "raylet"
        except psutil.Error:  # (a worker that ended meanwhile)
            return False

    raylets = [p for p in psutil.Process().children(recursive=True) if is_raylet(p)]
    assert len(raylets) == 1
    env = raylets[0].environ()
    assert {key: env.get(key) for key in CONNECT_RETRY} == CONNECT_RETRY

    @ray.remote(num_cpus=0)
    def retry() -> tuple[int, int]:
        config = ray._raylet.Config
        return config.raylet_client_connect_timeout_milliseconds(), config.raylet_client_num_connect_attempts()

    assert ray.get(retry.remote()) == (50, 200)


def test_a_local_rays_workers_output_stays_in_their_log_files(shared_ray):
    """ray_session's driver prints none of the workers' output (``log_to_driver=False``): what a worker
    prints is in its own log file in Ray's session logs, which the run dir shows."""
    import os
    import time
    import uuid

    import ray

    marker = f"worker output {uuid.uuid4().hex}"

    @ray.remote(num_cpus=0)
    def shout(line: str) -> int:
        print(line, flush=True)
        return os.getpid()

    pid = ray.get(shout.remote(marker))
    assert shared_ray.owned and shared_ray.temp_dir is not None  # (a Ray this module's session started)
    logs = shared_ray.temp_dir / "session_latest" / "logs"
    deadline = time.monotonic() + 10
    while not any(marker in f.read_text() for f in logs.glob(f"worker-*-{pid}.out")):
        assert time.monotonic() < deadline, f"{marker!r} not in {sorted(f.name for f in logs.glob('worker-*'))}"
        time.sleep(0.1)
