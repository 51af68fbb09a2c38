"""The files of one sweep's run directory (``runs/<name>/<time>/``), named once."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path

SPEC_FILE = "spec.yaml"  # the resolved spec the sweep ran (resume reads it)
STATE_FILE = "sweep.json"  # MLflow parent run id, tracking URI, experiment, Optuna storage
RAY_FILE = "ray.json"  # the Ray dashboard's address while the sweep runs
OPTUNA_FILE = "optuna.db"  # the study, unless execution.storage names another
MODELS_DIR = "models"  # models of running trials and the best so far (one per Ray trial id)
SPLIT_FILE = "split.npz"  # the data check's split of the data: the trials load it instead of splitting again
BEST_DIR = "best"  # the best trial's model and config, published when the sweep ends
BEST_CONFIG = "best_config.yaml"
BEST_MODEL = "model"
TEST_FILE = "test_metrics.json"  # in best/: the chosen model on the held-out test part
LOCK_FILE = ".lock"  # held by the one driver of the run dir (``sweep.run.lock``); holds its PID


def new_run_dir(runs_dir: str, name: str) -> Path:
    """A fresh ``runs_dir/name/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... for sweeps started in the same second)."""
    stamp = Path(runs_dir) / name / datetime.now().strftime("%Y%m%d-%H%M%S")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        run_dir = stamp if n == 1 else stamp.with_name(f"{stamp.name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"{stamp}: 999 sweeps started in this second")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a kill or a full disk midway leaves the previous
    file as it was, never a truncated one that resume or ``cluster down`` cannot read.

    The text goes to a temp file beside ``path`` (same file system, so the rename is atomic), is flushed
    to disk, and then replaces ``path`` in one ``os.replace``."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.part")
    data = text.encode("utf-8")
    try:
        # (os.open with 0o666: the umask decides the mode, as for a file written in place)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # the data is on disk before the rename makes it the file
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut (best effort)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
