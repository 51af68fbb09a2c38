"""The sweep's record: its MLflow parent run opened (or re-opened on resume) and closed, the chosen
model's held-out test, and the run dir's state files (``sweep.json``, ``spec.yaml``), written only
here and always whole (``write_atomic``)."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sweep import credentials
from sweep.errors import SpecError
from sweep.interfaces import Recorder
from sweep.run_dir import (
    BEST_DIR,
    BEST_MODEL,
    OPTUNA_FILE,
    SPEC_FILE,
    SPLIT_FILE,
    STATE_FILE,
    TEST_FILE,
    write_atomic,
)
from sweep.spec import SweepSpec

if TYPE_CHECKING:
    from sweep.observer import ModelFiles, TrialBook, TrialRecord


@dataclass(frozen=True)
class RunState:
    """``sweep.json``: where a sweep's record and study are (URLs with their passwords masked)."""

    parent_run_id: str
    tracking_uri: str
    experiment: str
    storage: str


def has_state(run_dir: str | Path) -> bool:
    """True for a run dir that ``sweep run`` made."""
    return (Path(run_dir) / STATE_FILE).is_file()


def require_state(run_dir: str | Path, field: str = "run_dir") -> None:
    """SpecError naming ``field`` unless ``run_dir`` is a sweep's run dir."""
    if not has_state(run_dir):
        if (Path(run_dir) / SPEC_FILE).is_file():  # a sweep stopped as it started, before its record existed
            raise SpecError(
                [
                    f"{field}: '{run_dir}' holds no {STATE_FILE}: its sweep stopped before it recorded anything; "
                    f"start it again: sweep run {Path(run_dir) / SPEC_FILE}"
                ]
            )
        raise SpecError([f"{field}: '{run_dir}' holds no {STATE_FILE}; pass a directory that `sweep run` made"])


def read_state(run_dir: str | Path, field: str = "run_dir") -> RunState:
    """The run dir's state; SpecError naming ``field`` when the directory is not a sweep's run dir."""
    require_state(run_dir, field)
    try:
        return RunState(**json.loads((Path(run_dir) / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        raise SpecError(
            [f"{field}: '{run_dir}/{STATE_FILE}' is unreadable; it is written by `sweep run`, restore or rerun it"]
        ) from None


def write_state(run_dir: Path, state: RunState) -> None:
    """Whole or not at all: a kill or a full disk while resume rewrites it leaves the previous state."""
    write_atomic(run_dir / STATE_FILE, json.dumps(asdict(state), indent=1))


def write_spec(run_dir: Path, spec: SweepSpec) -> None:
    """``spec.yaml``, the resolved spec the sweep runs (rewritten on resume with its overrides), whole
    or not at all: resume reads it."""
    write_atomic(run_dir / SPEC_FILE, yaml.safe_dump(spec.stored(), sort_keys=False))


def _code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version

    return f"finetune-sweep {version('finetune-sweep')}"


def tracking_uri_of(spec: SweepSpec) -> str:
    from sweep.tracking import default_tracking_uri

    return spec.tracking.uri or default_tracking_uri(spec.execution.runs_dir)


def stored_storage_of(spec: SweepSpec, run_dir: Path) -> str:
    """The study's storage URL as stored and shown (a password masked or referenced later)."""
    return spec.execution.storage or f"sqlite:///{run_dir.resolve()}/{OPTUNA_FILE}"


def adopt_parent_run(spec: SweepSpec, run_dir: Path) -> bool:
    """Write the state of a run dir whose driver died after creating the sweep's parent run and before
    writing ``sweep.json``: the run is found by its ``sweep.run_dir`` tag (set as it was created), so the
    sweep resumes and ends it. False when the record holds no such run (nothing was recorded)."""
    from sweep.tracking import find_sweep_run

    uri = tracking_uri_of(spec)
    experiment = spec.tracking.experiment or spec.name
    parent_id = find_sweep_run(credentials.resolve(uri, "tracking.uri"), experiment, str(run_dir.resolve()))
    if parent_id is None:
        return False
    storage = credentials.mask(stored_storage_of(spec, run_dir))
    write_state(run_dir, RunState(parent_id, credentials.mask(uri), experiment, storage))
    return True


def open_record(
    spec: SweepSpec,
    run_dir: Path,
    resume: bool,
    storage: str,
    fingerprints: dict[str, str],
    previous: Any = None,
) -> Recorder:
    """The sweep's parent run: new, or re-opened from the run dir's state file on resume. ``previous``
    (``warm_start.Previous``): the sweep this one starts from, linked both ways where the store has both."""
    from sweep.tracking import PREVIOUS_DIR_TAG, PREVIOUS_TAG, MlflowRecorder

    uri = tracking_uri_of(spec)
    recorder = MlflowRecorder(
        credentials.resolve(uri, "tracking.uri"),
        spec.tracking.experiment or spec.name,
        Path(spec.execution.runs_dir) / "mlartifacts",
    )

    def record_state(parent_id: str) -> None:
        write_state(run_dir, RunState(parent_id, credentials.mask(uri), recorder.experiment, credentials.mask(storage)))

    if resume:
        recorder.resume_sweep(read_state(run_dir).parent_run_id)
        assert recorder.parent_id is not None
        record_state(recorder.parent_id)  # the URLs as this resume has them (overrides)
    else:
        params = {
            "trial": spec.trial_template(),
            "space": {k: v.model_dump(exclude_none=True) for k, v in spec.space.items()},
            **spec.model_dump(include={"objective", "sampler", "pruner", "budget", "resources"}),
        }
        tags = {
            "sweep.code_version": _code_version(),
            "sweep.run_dir": str(run_dir.resolve()),
            "sweep.storage": credentials.mask(storage),
            **{f"{k}.fingerprint": v for k, v in fingerprints.items()},
        }
        if previous is not None:
            tags[PREVIOUS_TAG] = previous.parent_run_id
            tags[PREVIOUS_DIR_TAG] = str(previous.run_dir.resolve())
        # the state is written the moment the parent run exists, before its params and spec are logged:
        # a driver killed after that leaves a run dir that resumes (and so ends) that run
        recorder.start_sweep(spec.name, params, tags, spec.stored(), on_created=record_state)
        if previous is not None:
            recorder.link_next(previous.parent_run_id)
    assert recorder.parent_id is not None
    return recorder


def close_record(
    spec: SweepSpec,
    book: TrialBook,
    models: ModelFiles,
    recorder: Recorder,
    run_dir: Path,
    wall: float,
    interrupted: bool,
    crashed: bool,
    stop_reason: str = "",
) -> dict[str, float]:
    """Publish the best model, evaluate it (alone) on the held-out test part, write the sweep's summary,
    and leave no run RUNNING. Returns the test metrics."""
    best = book.best
    test: dict[str, float] = {}
    if best is not None and models.models_dir is not None:
        models.publish(spec, best, run_dir, recorder)
        if not interrupted and not crashed:
            test = _held_out(spec, best, run_dir)
            if test:
                recorder.log_trial_metrics(best.ray_id, test)
    summary = {
        "wall_s": wall,
        "num_trials": len(book.trials),
        **{f"num_{k}": v for k, v in book.counts().items()},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "interrupted": interrupted,
        "num_never_started": max(0, spec.budget.num_trials - book.num_used()),
        "stop_reason": stop_reason,
        **book.time_split(),
        **test,
    }
    end_tags = {
        "sweep.best_trial": str(best.number if best else None),
        "sweep.counts": json.dumps(book.counts()),
        "sweep.interrupted": str(interrupted),
        **({"sweep.stop_reason": stop_reason} if stop_reason else {}),
    }
    if not interrupted and not crashed:
        recorder.finish_sweep(summary, end_tags)
    recorder.close(interrupted, crashed)
    return test


def _held_out(spec: SweepSpec, best: TrialRecord, run_dir: Path) -> dict[str, float]:
    """The chosen model on the test part (the only model that ever sees it); {} without a test part."""
    from trainers.saved import evaluate_held_out

    model_dir = run_dir / BEST_DIR / BEST_MODEL
    cfg = spec.trial_config(best.params)
    if not model_dir.is_dir() or cfg.split.num_folds is not None:
        return {}
    try:
        metrics, rows = evaluate_held_out(cfg, model_dir, run_dir / SPLIT_FILE)
    except Exception:  # the sweep is recorded either way; `sweep evaluate` can do it again
        logging.getLogger(__name__).warning("the held-out evaluation failed", exc_info=True)
        return {}
    if metrics:
        write_atomic(run_dir / BEST_DIR / TEST_FILE, json.dumps({"num_rows": rows, **metrics}, indent=1))
    return metrics
