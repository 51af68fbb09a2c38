"""The model a sweep chose, from its run dir (``best/``) or the registry (``models:/NAME@ALIAS``):
evaluated on a file (and recorded on the sweep's MLflow run) or used to predict one."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import SpecError
from sweep.run_dir import BEST_CONFIG, BEST_DIR, BEST_MODEL, write_atomic


@contextlib.contextmanager
def chosen_model(target: str | Path, tracking_uri: str | None = None) -> Iterator[tuple[Any, Path]]:
    """The chosen model's trial config and weights; a registered version is downloaded for the block only."""
    from trainers.config import load_trial_config

    if not str(target).startswith("models:/"):
        best = Path(target) / BEST_DIR
        if not (best / BEST_CONFIG).is_file() or not (best / BEST_MODEL).is_dir():
            raise SpecError(
                [
                    f"run_dir: '{target}' holds no best model ({BEST_DIR}/{BEST_MODEL}); "
                    "pass the run dir of a finished sweep"
                ]
            )
        yield load_trial_config(best / BEST_CONFIG), best / BEST_MODEL
        return
    from sweep.credentials import resolve
    from sweep.tracking import default_tracking_uri, download_registered

    into = Path(tempfile.mkdtemp(prefix="fsweep-model-"))
    try:
        try:
            uri = resolve(tracking_uri or default_tracking_uri("runs"), "--tracking-uri")
            download_registered(uri, str(target), into)
        except ValueError as exc:
            raise SpecError([f"model: {exc}; list versions in the MLflow UI (make mlflow-ui)"]) from None
        yield load_trial_config(into / BEST_CONFIG), into / BEST_MODEL
    finally:
        shutil.rmtree(into, ignore_errors=True)


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    num_rows: int
    recorded_as: str | None  # the metrics' prefix on the sweep's MLflow run, None when not recorded


def evaluate(target: str, file: str, tracking_uri: str | None = None) -> Evaluation:
    """The chosen model on ``file``. From a run dir the metrics also go to ``best/eval_<file>.json`` and
    to the sweep's MLflow run (``eval_<file>_*``)."""
    from sweep.run.record import has_state, read_state
    from trainers.saved import evaluate_file

    registered = target.startswith("models:/")
    run_dir = Path(target)
    record_uri = None
    if not registered and has_state(run_dir):  # resolved before the (slow) evaluation
        from sweep.credentials import resolve

        record_uri = resolve(tracking_uri or read_state(run_dir).tracking_uri, "--tracking-uri")
    with chosen_model(target, tracking_uri) as (cfg, model_dir):
        metrics, rows = evaluate_file(cfg, model_dir, file)
    if registered:
        return Evaluation(metrics, rows, None)  # no run dir to write to
    stem = re.sub(r"[^\w.-]", "_", Path(file).stem)
    write_atomic(
        run_dir / BEST_DIR / f"eval_{stem}.json", json.dumps({"file": str(file), "num_rows": rows, **metrics}, indent=1)
    )
    if record_uri is None:
        return Evaluation(metrics, rows, None)
    from sweep.tracking import record_evaluation

    record_evaluation(record_uri, read_state(run_dir).parent_run_id, stem, metrics)
    return Evaluation(metrics, rows, f"eval_{stem}_")


def predict(target: str, file: str, out: Path, on_batch: Callable[[int], Any] | None = None) -> int:
    """The chosen model's predictions for ``file``, written to ``out`` (CSV); returns the row count."""
    from trainers.saved import predict_file

    if not out.parent.is_dir():
        raise SpecError([f"--out: directory '{out.parent}' does not exist; create it or choose another path"])
    with chosen_model(target) as (cfg, model_dir):
        header, rows = predict_file(cfg, model_dir, file, on_batch=on_batch)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return len(rows)
