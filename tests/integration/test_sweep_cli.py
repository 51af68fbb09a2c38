"""The `sweep` command on a real Ray of its own: Ctrl-C ends runs KILLED, resume finishes the budget,
and the sweep leaves no Ray temp dir behind."""

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweep.tracking import runs_of

pytestmark = pytest.mark.integration


def _ray_stand_ins() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("fsweep-ray-*"))


def test_ctrl_c_ends_runs_killed_and_resume_finishes_the_budget(tmp_path):
    stand_ins = _ray_stand_ins()
    spec = tmp_path / "sig.yaml"
    spec.write_text(
        "name: sig\n"
        "trial: {model: {name_or_path: tiny-bert}, adaptation: {method: full}, data: {max_rows: 200, max_length: 24},"
        " optim: {max_steps: 150, batch_size: 8}, eval: {eval_every_steps: 50}}\n"
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
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("trial 1 started"):  # the first trial is done, the second under way (150 steps)
            proc.send_signal(signal.SIGINT)
            break
    out = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out
    assert "interrupted: runs ended as KILLED. Resume with: sweep resume runs/sig/" in out
    uri = f"sqlite:///{tmp_path}/runs/mlflow.db"
    runs = runs_of(uri, "sig")
    assert all(r.info.status != "RUNNING" for r in runs)
    assert {r.info.run_name: r.info.status for r in runs}["sig"] == "KILLED"
    trial_status = sorted(r.data.tags["trial.status"] for r in runs if r.data.tags.get("sweep.role") == "trial")
    assert trial_status == ["completed", "killed"]

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
    # the killed configuration ran again; no completed one was sampled again (a re-seeded sampler)
    rates = {
        r.data.tags["trial.status"] + r.data.tags["optuna.trial_number"]: r.data.params["optim.learning_rate"]
        for r in trials
    }
    completed = [v for k, v in rates.items() if k.startswith("completed")]
    assert len(set(completed)) == 3
    assert next(v for k, v in rates.items() if k.startswith("killed")) in completed
    assert "[4/3]" not in resumed.stdout and "[3/3]" in resumed.stdout
    assert "━" not in resumed.stdout and "[3/3] trial" in resumed.stdout  # a pipe gets plain lines, no live panel

    # Ray ran in /tmp (unix socket paths must be short), which the sweep removed again, keeping Ray's logs
    # (the trials' tracebacks) in the run dir
    link = run_dir.resolve() / "ray"
    assert not link.exists() and not link.is_symlink()
    assert _ray_stand_ins() <= stand_ins
    assert any((run_dir / "ray-logs").glob("session_*/*.log"))


def test_bad_data_is_one_line_and_exit_2_though_ray_started_beside_the_check(tmp_path):
    """A fresh interpreter checks the data in a child process while Ray starts: the data's mistake is
    still the one line on stderr and exit code 2, no run dir or record is written, and the Ray that
    started is gone again (no process, no temp dir)."""
    import psutil

    def raylets() -> set[int]:
        return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "raylet"}

    stand_ins, before = _ray_stand_ins(), raylets()
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"row {i},1\n" for i in range(40)))
    (tmp_path / "s.yaml").write_text(
        "name: bad\n"
        "trial: {model: {name_or_path: tiny-bert}, data: {path: d.csv}}\n"
        "space:\n  optim.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "sweep", "run", "s.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: trial.data.label_column: 'label' has a single class ['1']; classification needs >= 2"
    ]
    assert not (tmp_path / "runs").exists()
    assert _ray_stand_ins() <= stand_ins and raylets() <= before
