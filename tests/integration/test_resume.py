"""Resume is exact: a real sweep whose driver is SIGKILLed at points the test chooses (as Optuna makes a
trial, as a trial's run starts, mid-report, between the study's tell and MLflow's, while publishing
the best model), each time resumed with `sweep resume` (killed again at the next point): nothing left
RUNNING, one MLflow run per Optuna trial with the same status, no finished configuration run twice,
the budget exact, the best model the best of all the drivers'."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.tracking import runs_of

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
NUM_TRIALS = 6  # enough for every kill point to come before the budget is used
SPEC = (
    "name: kill\n"
    "trial: {model: {name_or_path: tiny-bert}, adaptation: {method: full}, data: {max_rows: 160, max_length: 16},"
    " optim: {max_steps: 8, batch_size: 8, schedule: constant}, eval: {eval_every_steps: 4, metric: val_accuracy}}\n"
    "space:\n  optim.learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}\n"
    "objective: {metric: val_accuracy, direction: maximize}\n"
    "sampler: {kind: random, seed: 0}\npruner: {kind: none}\n"
    f"budget: {{num_trials: {NUM_TRIALS}, max_concurrent_trials: 2}}\n"
    "execution: {dashboard: false, verdict: false}\n"
)


def _sweep(cwd, *args, timeout=300):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env(cwd)
    )


def _env(cwd):
    import os

    return {**os.environ, "PYTHONPATH": f"{HERE.parent.parent}:{os.environ.get('PYTHONPATH', '')}"}


# one sweep, its driver killed at each point in turn: the run, then a resume per point, then the resume
# that finishes; the Nth call counts from each driver's start
KILLS = [
    ("run", "ask", 2),  # the second trial exists in Optuna only
    ("resume", "start", 3),  # the third trial's run was just created
    ("resume", "report", 3),  # mid-trial, two trials running
    ("resume", "end", 2),  # the second trial told to Optuna, its MLflow run still RUNNING
    ("resume", "publish", 1),  # the best model half copied
]


def test_kill_the_driver_at_each_point_then_resume(tmp_path):
    stand_ins = set(Path(tempfile.gettempdir()).glob("fsweep-ray-*"))  # Ray's temp dirs, while a sweep runs
    (tmp_path / "kill.yaml").write_text(SPEC)
    run_dir = None
    for command, point, nth in KILLS:
        target = ["kill.yaml"] if command == "run" else [str(run_dir)]
        killed = _sweep(tmp_path, str(HERE / "kill_driver.py"), point, str(nth), command, *target)
        assert killed.returncode == -9, f"{command} killed at {point} {nth}: {killed.stdout + killed.stderr}"
        assert f"[{NUM_TRIALS + 1}/" not in killed.stdout  # the progress counter stays within the budget
        run_dir = run_dir or next((tmp_path / "runs" / "kill").iterdir())

    resumed = _sweep(tmp_path, "-m", "sweep", "resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"[{NUM_TRIALS + 1}/" not in resumed.stdout

    uri = f"sqlite:///{tmp_path}/runs/mlflow.db"
    runs = runs_of(uri, "kill")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    # each killed driver's Ray temp dir went with the next one's; every driver's logs are in the run dir
    assert set(Path(tempfile.gettempdir()).glob("fsweep-ray-*")) <= stand_ins
    assert not (run_dir / "ray").exists() and len(list((run_dir / "ray-logs").glob("session_*"))) == len(KILLS) + 1
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_runs = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]

    storage = json.loads((run_dir / "sweep.json").read_text())["storage"]
    study = optuna.load_study(study_name="kill", storage=storage)
    trials = [t for t in study.trials if t.state.is_finished()]
    assert not [t for t in study.trials if not t.state.is_finished()]  # no queued rerun left behind
    # exactly one MLflow run per Optuna trial, the same status in both
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs)
    assert numbers == [t.number for t in trials]
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trial_runs}
    for t in trials:
        run = by_number[t.number]
        assert run.data.tags["trial.status"] == t.user_attrs["status"], t.number
        expected = {"killed": "KILLED", "completed": "FINISHED"}[t.user_attrs["status"]]
        assert run.info.status == expected, t.number
    # the budget exactly: killed trials are run again, everything else used its slot
    ended = [t for t in trials if t.user_attrs["status"] != "killed"]
    assert len(ended) == NUM_TRIALS
    # no finished configuration sampled again; each killed one ran again exactly once
    rates = [t.params["optim.learning_rate"] for t in ended]
    assert len(set(rates)) == NUM_TRIALS
    for t in trials:
        if t.user_attrs["status"] == "killed" and t.params:
            reruns = [u for u in trials if u.user_attrs.get("rerun_of") == t.number]
            assert len(reruns) == 1 and reruns[0].params == t.params
    # the best model is the best over both runs, published whole
    top = max(t.value for t in trials if t.state == TrialState.COMPLETE)
    best = study.trials[int(parents[0].data.tags["sweep.best_trial"])]
    assert best.state == TrialState.COMPLETE and best.value == top
    assert best.number == min(t.number for t in trials if t.value == top)  # a tie goes to the lower number
    config = yaml.safe_load((run_dir / "best" / "best_config.yaml").read_text())
    assert config["optim"]["learning_rate"] == best.params["optim.learning_rate"]
    assert any((run_dir / "best" / "model").iterdir())
    assert not (run_dir / ".best.partial").exists()
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == []  # published and cleaned up


def test_resume_while_the_sweep_runs_exits_2_and_the_sweep_finishes(tmp_path):
    """Issue 33, finding 4: `sweep resume` on a sweep that still runs (its driver paused as its second
    trial's run starts, trials running) is refused at the run dir's lock, changing nothing; the sweep
    then finishes as if it had not been tried."""
    import time

    (tmp_path / "kill.yaml").write_text(SPEC)
    args = [str(HERE / "kill_driver.py"), f"--hold={tmp_path}", "start", "2", "run", "kill.yaml", "budget.num_trials=2"]
    log = tmp_path / "first.log"  # (a file, not a pipe: a paused reader never blocks the sweep's output)
    with log.open("w") as out:
        first = subprocess.Popen(
            [sys.executable, *args], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=_env(tmp_path)
        )
    try:
        deadline = time.time() + 240
        while not (tmp_path / "held").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (tmp_path / "held").exists(), log.read_text()
        run_dir = next((tmp_path / "runs" / "kill").iterdir())
        state = {p.name: p.read_bytes() for p in (run_dir / "sweep.json", run_dir / "spec.yaml")}

        second = _sweep(tmp_path, "-m", "sweep", "resume", str(run_dir), timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.splitlines() == [
            f"error: run_dir: '{run_dir}' is in use by another sweep (pid {first.pid}); "
            "wait for it to end, or stop it first"
        ]
        assert {p.name: p.read_bytes() for p in (run_dir / "sweep.json", run_dir / "spec.yaml")} == state
    finally:
        (tmp_path / "release").touch()
        first.wait(timeout=300)
    out = log.read_text()
    assert first.returncode == 0, out
    runs = runs_of(f"sqlite:///{tmp_path}/runs/mlflow.db", "kill")
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert sorted(r.data.tags["trial.status"] for r in trials) == ["completed", "completed"], out
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert not (run_dir / ".lock").read_text()  # the lock was the sweep's until it ended
