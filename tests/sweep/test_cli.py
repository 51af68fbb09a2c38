import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.errors import SpecError, SweepError

REPO = Path(__file__).parents[2]


def _sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_validate_ok_starts_nothing(tmp_path):
    proc = _sweep("validate", str(REPO / "search_spaces" / "demo.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "OK — sweep 'demo', 6 parameters, 14 trials (2 of them confirmations), sampler tpe, pruner median"
        in proc.stdout
    )
    lines = proc.stdout.splitlines()[1:]
    assert lines == [
        "rows: train 640, validation 160, test 0",
        "  train: negative 304, positive 336; minority 'negative' 48%",
        "  validation: negative 76, positive 84; minority 'negative' 48%",
    ]
    assert not (tmp_path / "runs").exists()


def test_validate_warns_of_a_class_too_rare_to_measure(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{'rare' if i < 4 else 'common'}\n" for i in range(60)))
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: s\ntrial: {{model: {{name_or_path: tiny-bert}}, data: {{path: {data}}}, split: {{val_fraction: 0.5}}}}\n"
        "space:\n  optim.learning_rate: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
    )
    proc = _sweep("validate", str(spec), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "  warning: validation has 2 row(s) of 'rare'; its metrics for that class are noise" in proc.stdout


def test_bad_spec_exits_2_with_one_line_per_problem(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\n"
        "trial: {model: {name_or_path: tiny-bert}}\n"
        "space:\n"
        "  optim.learning_rate: {type: float, low: 0, high: 1e-2, log: true}\n"
        "objective: {metric: val_acc}\n"
    )
    proc = _sweep("run", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "error: objective.metric: 'val_acc' is not reported for classification; use one of "
        "['train_loss', 'val_loss', 'val_accuracy', 'val_f1_macro']",
        "error: space.optim.learning_rate.low: 0.0 with log: true must be > 0; use a positive low or log: false",
        "error: space.optim.learning_rate: value 0.0 does not fit the trial (0.0 must be > 0)",
    ]
    assert not (tmp_path / "runs").exists()  # nothing started, nothing recorded


@pytest.mark.integration  # a real `sweep run`: Ray starts beside the data check
def test_data_error_exits_2_and_records_nothing(tmp_path):
    """(Ray starts while the data is checked, and is gone again.)"""
    proc = _sweep("run", str(REPO / "search_spaces" / "demo.yaml"), "trial.data.label_column=sentiment", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: trial.data.label_column: column 'sentiment' is not in")
    assert not (tmp_path / "runs").exists()


def test_a_warm_start_from_no_sweep_exits_2_before_anything_starts(tmp_path):
    proc = _sweep("run", str(REPO / "search_spaces" / "demo.yaml"), "warm_start.from_run=runs/old", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "error: warm_start.from_run: 'runs/old' is not a directory; pass the run dir of an earlier sweep "
        "(runs/NAME/TIME), or warm_start.from_run=null to start cold"
    ]
    assert not (tmp_path / "runs").exists()


def test_resume_needs_a_run_dir(tmp_path):
    proc = _sweep("resume", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"error: run_dir: '{tmp_path}' holds no sweep.json; pass a directory that `sweep run` made"
    )


def test_report_of_something_that_is_no_sweep_exits_2(tmp_path):
    proc = _sweep("report", "no-such-run", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "error: report: 'no-such-run' is neither a run dir with sweep.json nor a sweep's MLflow run id in "
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists()  # looked up, not made


def test_predict_to_a_missing_directory_is_one_line(tmp_path):
    proc = _sweep("predict", str(tmp_path), "x.csv", "--out", str(tmp_path / "no" / "p.csv"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: --out: directory '{tmp_path}/no' does not exist; create it or choose another path"
    )
    proc = _sweep("evaluate", str(tmp_path), "x.csv", cwd=tmp_path)
    assert proc.returncode == 2 and "holds no best model" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_before_anything_is_recorded_is_one_line_and_exit_130(monkeypatch, capsys):
    import sweep.run
    from sweep import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep.run, "run_sweep", interrupted)
    assert cli.main(["run", str(REPO / "search_spaces" / "demo.yaml")]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_an_error_message_quoting_a_url_is_printed_masked(monkeypatch, capsys):
    from sweep import cli

    url = "postgresql+psycopg://sweep:pa/ss-Cli-8@db/optuna"

    def sweep_error(args):
        raise SweepError(f"url: cannot open Optuna storage {url} (timeout)")

    def spec_error(args):
        raise SpecError([f"execution.storage: {url} is not reachable", "budget.num_trials: 0 < 1"])

    monkeypatch.setattr(cli, "_init_storage", sweep_error)
    assert cli.main(["init-storage", url]) == 2
    assert capsys.readouterr().err == (
        "error: url: cannot open Optuna storage postgresql+psycopg://sweep:***@db/optuna (timeout)\n"
    )
    monkeypatch.setattr(cli, "_init_storage", spec_error)
    assert cli.main(["init-storage", url]) == 2
    assert capsys.readouterr().err == (
        "error: execution.storage: postgresql+psycopg://sweep:***@db/optuna is not reachable\n"
        "error: budget.num_trials: 0 < 1\n"
    )


def test_resume_of_a_sweep_another_process_drives_exits_2_and_changes_nothing(tmp_path, capsys):
    """Issue 33, finding 4: a second driver (here `sweep resume` while the sweep runs) must not mark the
    live sweep's trials killed; it stops at the run dir's lock, before it reads or writes anything."""
    from sweep import cli
    from sweep.run.record import RunState, write_spec, write_state
    from tests.sweep.test_lock import hold_in_child, in_use
    from tests.sweep.test_state_files import small_spec

    run_dir = tmp_path / "runs" / "s" / "20260101-000000"
    run_dir.mkdir(parents=True)
    write_spec(run_dir, small_spec("s"))
    write_state(run_dir, RunState("parent", f"sqlite:///{tmp_path}/m.db", "s", f"sqlite:///{run_dir}/optuna.db"))
    holder = hold_in_child(run_dir)  # the running sweep
    try:
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*")}
        assert cli.main(["resume", str(run_dir)]) == 2
        assert capsys.readouterr().err.splitlines() == [f"error: {in_use(run_dir, holder.pid)}"]
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*")} == before
    finally:
        holder.communicate()
