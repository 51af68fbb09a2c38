"""A sweep's chain: `sweep next RUN_DIR` runs the next sweep its verdict wrote, and `sweep history NAME`
lists the sweeps of one name (one MLflow experiment), each with the sweep it started from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sweep.errors import SpecError
from sweep.run.record import has_state
from sweep.run_dir import STATE_FILE

NEXT_FILE = "next_sweep.yaml"  # in the run dir's report/: written by the verdict (sweep.verdict.REPORT_DIR)
HEADER = ["started", "run", "run dir", "trials", "verdict", "best", "top blame", "previous"]


def next_spec(run_dir: str | Path) -> Path:
    """The next sweep the verdict on ``run_dir`` wrote; SpecError (one line, with the fix) without one."""
    from sweep.verdict import REPORT_DIR

    path = Path(run_dir) / REPORT_DIR / NEXT_FILE
    if not path.is_file():
        hint = "" if has_state(run_dir) else f" (nor {STATE_FILE}: is it a sweep's run dir?)"
        raise SpecError(
            [f"run_dir: '{run_dir}' has no {REPORT_DIR}/{NEXT_FILE}{hint}; write it with: sweep report {run_dir}"]
        )
    return path


def history_rows(uri: str, name: str) -> list[list[str]]:
    """One row per sweep of experiment ``name`` (``HEADER``), oldest first. SpecError when the store
    holds no sweep of that name."""
    from sweep.credentials import mask
    from sweep.tracking import experiment_names, sweep_runs

    runs = sweep_runs(uri, name)
    if not runs:
        known = sorted(experiment_names(uri))
        shown = f"sweeps here: {', '.join(known)}" if known else "it holds no sweep yet"
        raise SpecError(
            [
                f"history: no sweep named '{name}' in {mask(uri)} ({shown}); pass a spec's name "
                "(or its tracking.experiment), with --tracking-uri or --runs-dir where it was recorded"
            ]
        )
    return [_row(run) for run in runs]


def _row(run: dict[str, Any]) -> list[str]:
    """A sweep's row; "previous" is the run id it started from (the first 8 characters, as "run" shows)."""
    from sweep.tracking import PREVIOUS_TAG

    tags, metrics = run["tags"], run["metrics"]
    try:
        trials = str(sum(json.loads(tags["sweep.counts"]).values()))
    except (KeyError, ValueError, AttributeError):
        trials = "-"  # running, or interrupted before its counts were written
    best = metrics.get("best_value")
    return [
        datetime.fromtimestamp(run["start_time"] / 1000).strftime("%Y-%m-%d %H:%M:%S"),
        run["run_id"][:8],
        _shown(tags.get("sweep.run_dir", "-")),
        trials,
        tags.get("verdict", "-" if run["status"] == "FINISHED" else run["status"].lower()),
        f"{best:.4g}" if best is not None else "-",
        tags.get("blame.top", "-"),
        tags.get(PREVIOUS_TAG, "-")[:8],
    ]


def _shown(run_dir: str) -> str:
    """A run dir under the working directory relative to it (as `sweep run` printed it), others whole."""
    try:
        return str(Path(run_dir).relative_to(Path.cwd()))
    except ValueError:
        return run_dir


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, as the sweep's summary prints its trials."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
