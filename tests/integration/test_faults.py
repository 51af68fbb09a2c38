"""Trial faults on real Ray: each ends with one status in Optuna, Ray and MLflow alike, transient ones
are retried up to budget.max_retries, deterministic ones never, and the sweep goes on."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep.run import run_sweep
from sweep.spec import validate_spec
from sweep.tracking import runs_of
from tests.integration.faults import FAULTS

pytestmark = pytest.mark.integration

EXPECTED = {  # seed -> (status, attempts, Ray's trial status)
    0: ("completed", 1, "TERMINATED"),
    1: ("failed", 1, "TERMINATED"),
    2: ("diverged", 1, "TERMINATED"),
    3: ("completed", 2, "TERMINATED"),
    4: ("completed", 2, "TERMINATED"),
    5: ("oom", 2, "ERROR"),
    6: ("timeout", 1, "ERROR"),
    7: ("failed", 1, "TERMINATED"),
}


@pytest.fixture(scope="module")
def faulty_ray(tmp_path_factory):
    import ray

    fault_dir = tmp_path_factory.mktemp("faults")
    ray.init(
        address="local",
        include_dashboard=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        runtime_env={
            "worker_process_setup_hook": "tests.integration.faults.install",
            "env_vars": {"FAULT_DIR": str(fault_dir), "PYTHONPATH": str(Path(__file__).parents[2])},
        },
    )
    yield fault_dir
    ray.shutdown()


def test_each_fault_has_one_status_everywhere_and_transient_ones_are_retried(tmp_path, faulty_ray):
    spec = validate_spec(
        {
            "name": "faults",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "adaptation": {"method": "full"},
                "data": {"max_rows": 160, "max_length": 16},
                "optim": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3},
                "eval": {"eval_every_steps": 3},
            },
            "space": {"seed": {"type": "categorical", "choices": list(FAULTS)}},
            "sampler": {"kind": "grid"},
            "pruner": {"kind": "none"},
            "budget": {
                "num_trials": len(FAULTS),
                "max_concurrent_trials": 2,
                "max_retries": 1,
                "trial_timeout_s": 40,
            },
            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
            "execution": {"runs_dir": str(tmp_path / "runs"), "dashboard": False, "verdict": False},
        }
    )
    lines: list[str] = []
    result = run_sweep(spec, echo=lines.append)
    assert not result.interrupted

    storage = json.loads((result.run_dir / "sweep.json").read_text())["storage"]
    study = optuna.load_study(study_name="faults", storage=storage)
    assert len(study.trials) == len(FAULTS)  # a retry is the same Optuna trial, not a new one
    by_seed = {t.params["seed"]: t for t in study.trials}
    runs = [r for r in runs_of(result.tracking_uri, "faults") if r.data.tags.get("sweep.role") == "trial"]
    assert len(runs) == len(FAULTS)  # and the same MLflow run
    run_of = {int(r.data.params["seed"]): r for r in runs}
    tune_dir = result.run_dir.resolve() / "tune"
    ours = {t.params["seed"]: t for t in result.trials}
    for seed, (status, attempts, in_ray) in EXPECTED.items():
        trial, run = by_seed[seed], run_of[seed]
        assert trial.user_attrs["status"] == status == run.data.tags["trial.status"] == ours[seed].status, seed
        # the sampler hears a failure as a failure, never as a made-up bad value
        state = {"completed": TrialState.COMPLETE}.get(status, TrialState.FAIL)
        assert trial.state == state and (trial.value is None) == (state == TrialState.FAIL), seed
        assert run.info.status == {"completed": "FINISHED", "diverged": "FINISHED"}.get(status, "FAILED"), seed
        # Ray keeps the error of each failed attempt, and ended the trial as ERROR where it gave up
        error_file = tune_dir / f"trial_{run.data.tags['ray.trial_id']}" / "error.txt"
        assert error_file.exists() == (in_ray == "ERROR" or attempts > 1), seed
        tried = (faulty_ray / f"attempts-{seed}").read_text()
        assert len(tried) == attempts, seed
        assert run.data.tags.get("trial.retries", "0") == str(attempts - 1), seed
    assert run_of[1].data.tags["trial.error"] == "ValueError: boom at step 0"
    assert run_of[1].data.tags["trial.failure"] == "exception" and run_of[7].data.tags["trial.failure"] == "config"
    assert run_of[5].data.tags["trial.failure"] == "oom" and "low on memory" in run_of[5].data.tags["trial.error"]
    assert run_of[6].data.tags["trial.failure"] == "timeout"
    assert "worker lost" in run_of[3].data.tags["trial.retry_1_reason"]
    assert "OutOfMemoryError" in run_of[4].data.tags["trial.retry_1_reason"]
    assert any("retry 1 of 1" in line for line in lines)
    assert result.counts == {"completed": 3, "failed": 2, "diverged": 1, "oom": 1, "timeout": 1}
