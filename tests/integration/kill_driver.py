"""A `sweep` command (`run SPEC`, `resume RUN_DIR`) whose driver SIGKILLs itself at a point the test
chooses: the Nth call of one of the functions below. With ``--hold=DIR`` first it pauses there instead (writes DIR/held, goes on once
DIR/release exists): a sweep caught mid-run, for a second command beside it. Used by test_resume.py;
never by the product."""

import os
import shutil
import signal
import sys
import time
import types
from pathlib import Path

import optuna

import sweep.observer
from sweep import cli
from sweep.tracking import MlflowRecorder

# the best model's publication alone (Ray and MLflow copy trees in this process too)
sweep.observer.shutil = types.SimpleNamespace(**{k: getattr(shutil, k) for k in dir(shutil) if not k.startswith("_")})


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _hold(where: Path) -> None:
    (where / "held").touch()
    deadline = time.time() + 300
    while not (where / "release").exists() and time.time() < deadline:
        time.sleep(0.1)


def _patch(owner: object, name: str, nth: int, before: bool, stop=_die) -> None:
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] == nth:
            stop()
        out = original(*args, **kwargs)
        if not before and calls[0] == nth:
            stop()
        return out

    setattr(owner, name, wrapper)


POINTS = {
    # Optuna made the trial; the driver dies before the trial has a Ray id or an MLflow run
    "ask": (optuna.Study, "ask", False),
    # the trial's MLflow run exists, RUNNING; the trial is about to start training
    "start": (MlflowRecorder, "start_trial", False),
    # mid-trial: a report written to MLflow and the study
    "report": (MlflowRecorder, "log_report", False),
    # the study was told how the trial ended; its MLflow run not yet
    "end": (MlflowRecorder, "end_trial", True),
    # the best model's files half-published: copied to the staging dir, not yet in best/
    "publish": (sweep.observer.shutil, "copytree", False),
}

if __name__ == "__main__":
    args = sys.argv[1:]
    hold = args.pop(0).removeprefix("--hold=") if args[0].startswith("--hold=") else None
    point, nth, *argv = args
    owner, name, before = POINTS[point]
    _patch(owner, name, int(nth), before, (lambda: _hold(Path(hold))) if hold else _die)
    sys.exit(cli.main(argv))
