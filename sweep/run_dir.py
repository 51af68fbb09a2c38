"""The files of one sweep's run directory (``runs/<name>/<time>/``), named once."""

from __future__ import annotations

import hashlib
import tempfile
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


def ray_temp_dir(link: Path) -> tuple[str, bool]:
    """A Ray temp dir reachable as ``link``; True when it is a short stand-in under /tmp. Ray puts unix
    sockets ~62 characters below it and a socket path may not exceed 107 bytes, so a long path gets a
    short real one in /tmp and ``link`` points to it until Ray is done."""
    link = link.parent.resolve() / link.name
    if len(str(link)) <= 40:
        link.mkdir(parents=True, exist_ok=True)
        return str(link), False
    digest = hashlib.sha1(str(link).encode()).hexdigest()[:10]
    short = Path(tempfile.gettempdir()) / f"fsweep-{digest}"
    short.mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(short, target_is_directory=True)
    return str(short), True
