"""The files of one sweep's run directory (``runs/<name>/<time>/``), named once."""

from __future__ import annotations

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
