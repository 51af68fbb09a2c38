"""Watching a sweep, in a real browser: after a real tiny sweep, `make mlflow-ui` and
`make optuna-dashboard` serve it on 127.0.0.1 and headless Chromium shows the sweep, its trial runs
and their statuses (MLflow), the study named after the sweep and a pruned trial (optuna-dashboard).
Each page's screenshot is kept for the README (docs/)."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.run import run_sweep
from sweep.spec import validate_spec
from tests.integration.browser import CHROMIUM, NO_CHROMIUM, dump_dom, free_port, screenshot, wait_for

REPO = Path(__file__).parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("shared_ray"),
    pytest.mark.needs(NO_CHROMIUM if CHROMIUM is None else None),
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A sweep in a project directory as `make sweep` leaves it (runs/ under the working directory)."""
    home = tmp_path_factory.mktemp("project")
    spec = validate_spec(
        {
            "name": "watch",
            "trial": {
                "model": {"name_or_path": "tiny-bert"},
                "adaptation": {"method": "full"},
                "data": {"max_rows": 240, "max_length": 24},
                "optim": {"max_steps": 9, "batch_size": 8, "schedule": "constant"},
                "eval": {"eval_every_steps": 3},
            },
            "space": {"optim.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-3, 1.0, 3.0]}},
            "sampler": {"kind": "grid", "seed": 5},
            "pruner": {"kind": "median", "num_startup_trials": 1},
            "budget": {"num_trials": 4, "max_concurrent_trials": 1},
            "execution": {"runs_dir": str(home / "runs"), "dashboard": False, "verdict": False},
            "tracking": {"uri": f"sqlite:///{home}/runs/mlflow.db"},
        }
    )
    result = run_sweep(spec, echo=lambda line: None)
    assert result.counts.get("pruned", 0) >= 1, result.counts
    return home, result


def _serve(cmd, cwd, url):
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(url)
    except AssertionError:
        proc.kill()
        raise
    return proc


def _stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)  # the server we started and its workers, by our PID's group
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _make(target, home, **variables):
    """`make TARGET` as a user runs it, from the project directory, against the repo's venv."""
    args = [f"{k}={v}" for k, v in variables.items()]
    venv = Path(sys.executable).parent.parent
    return ["make", "-s", "-f", str(REPO / "Makefile"), "-o", "setup", f"VENV={venv}", target, *args]


def test_mlflow_ui_shows_the_sweep_its_trials_and_their_statuses(swept, tmp_path):
    home, result = swept
    port = free_port()
    proc = _serve(_make("mlflow-ui", home, MLFLOW_PORT=port), home, f"http://127.0.0.1:{port}/health")
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(result.tracking_uri)
        experiment = client.get_experiment_by_name("watch")
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI view
        runs_page = dump_dom(f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs")
        assert "Training runs" in runs_page and ">watch<" in runs_page  # the sweep's parent run
        parent = client.get_run(result.parent_run_id)
        assert "[Compare the trials](/#/compare-runs?runs=" in parent.data.tags["mlflow.note.content"]
        compare = f"http://127.0.0.1:{port}{result.compare_path}"
        assert parent.data.tags["sweep.compare_trials"] == result.compare_path
        page = dump_dom(compare)
        names = {
            f"trial {t.number} · {t.status}" + ("" if t.status == "completed" else f"@{t.step}") for t in result.trials
        }
        assert all(name in page for name in names), (names, page.count("trial "))
        assert "pruned@" in page and "optim.learning_rate" in page and "val_loss" in page
        screenshot(compare, tmp_path / "mlflow.png", size="1400,900")
    finally:
        _stop(proc)
    _keep(tmp_path / "mlflow.png", "mlflow-ui.png")


def test_optuna_dashboard_shows_the_study_and_a_pruned_trial(swept, tmp_path):
    home, _ = swept
    port = free_port()
    proc = _serve(_make("optuna-dashboard", home, OPTUNA_PORT=port), home, f"http://127.0.0.1:{port}/")
    try:
        dom = dump_dom(f"http://127.0.0.1:{port}/dashboard")
        assert "watch" in dom  # the study is named after the sweep
        trials = dump_dom(f"http://127.0.0.1:{port}/dashboard/studies/1/trials")
        assert "PRUNED" in trials.upper() and "Intermediate" in trials  # a pruned trial and its reports
        screenshot(f"http://127.0.0.1:{port}/dashboard/studies/1", tmp_path / "optuna.png")
    finally:
        _stop(proc)
    _keep(tmp_path / "optuna.png", "optuna-dashboard.png")


def _keep(png: Path, name: str) -> None:
    """A fresh screenshot for the README, when asked (KEEP_SCREENSHOTS=1): docs/ stays as committed otherwise."""
    assert png.stat().st_size > 10_000  # a page was drawn, not a blank
    if os.environ.get("KEEP_SCREENSHOTS"):
        shutil.copy(png, REPO / "docs" / name)
