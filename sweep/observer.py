"""Trial events from Ray -> the study, the record, the best model's files and the progress line.

Split by role: ``TrialBook`` holds what is known of each trial (status, step, value, best);
``ModelFiles`` keeps at most the best model on disk and publishes it; ``Progress`` writes the console
lines; ``SweepObserver`` (the ``Observer`` the Ray adapter calls) tells each of them, in that order.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweep.credentials import mask
from sweep.direction import Direction
from sweep.interfaces import Bridge, Recorder
from sweep.run_dir import BEST_CONFIG, BEST_DIR, BEST_MODEL
from sweep.spec import SweepSpec
from sweep.status import TrialFailure, TrialStatus
from trainers.api import TrialOutcome

log = logging.getLogger(__name__)
Echo = Callable[[str], None]


@dataclass
class TrialRecord:
    ray_id: str
    number: int | None
    params: dict[str, Any]
    started: float = field(default_factory=time.time)
    first_report_s: float | None = None
    status: TrialStatus = TrialStatus.RUNNING
    step: int | None = None
    value: float | None = None
    outcome: TrialOutcome | None = None
    ended: float | None = None
    error: str | None = None
    retries: int = 0


class TrialBook:
    """What the sweep knows of each trial, and which completed trial is best."""

    def __init__(self, objective: str, direction: Direction | str) -> None:
        self.objective = objective
        self.direction = Direction(direction)
        self.trials: dict[str, TrialRecord] = {}
        self.best: TrialRecord | None = None

    def start(self, ray_id: str, number: int | None, params: Mapping[str, Any]) -> TrialRecord:
        return self.trials.setdefault(ray_id, TrialRecord(ray_id, number, dict(params)))

    def report(self, ray_id: str, step: int, metrics: Mapping[str, float]) -> None:
        rec = self.trials.get(ray_id)
        if rec is None:
            log.debug("report for unknown trial %s ignored", ray_id)
            return
        rec.step = step
        rec.value = metrics.get(self.objective)
        if rec.first_report_s is None:
            rec.first_report_s = time.time() - rec.started

    def finish(
        self, ray_id: str, number: int | None, final: TrialOutcome | TrialFailure | None, pruned: bool
    ) -> TrialRecord:
        """Close a trial from its final report; without one, Ray stopped it: pruned, or lost (failed)."""
        rec = self.trials.setdefault(ray_id, TrialRecord(ray_id, number, {}))
        rec.ended = time.time()
        if isinstance(final, TrialOutcome):
            rec.outcome = final
            rec.status = TrialStatus(final.status)
            rec.step = final.diverged_step if rec.status == TrialStatus.DIVERGED else final.final_step
            rec.value = final.result_metrics.get(self.objective)  # the kept weights (eval.keep)
        elif isinstance(final, TrialFailure):
            rec.status, rec.error = TrialStatus(final.status), final.error
        else:
            rec.status = TrialStatus.PRUNED if pruned else TrialStatus.FAILED
        if self.beats_best(rec):
            self.best = rec
        return rec

    def end(self, rec: TrialRecord, status: TrialStatus) -> None:
        rec.status, rec.ended = status, time.time()

    def add_prior(self, rec: TrialRecord) -> None:
        """A trial an earlier run of this sweep ended (resume)."""
        self.trials[rec.ray_id] = rec
        if self.beats_best(rec):
            self.best = rec

    def beats_best(self, rec: TrialRecord) -> bool:
        """Better objective; a tie goes to the lower trial number, so a resumed sweep (which reads the
        trials in number order) picks the same best as the run it continues, whose model files it kept."""
        if rec.status != TrialStatus.COMPLETED or rec.value is None:
            return False
        if self.best is None or self.best is rec:
            return True
        mine, theirs = self.direction.score(rec.value), self.direction.score(self.best.value or 0.0)
        if mine != theirs:
            return mine > theirs
        return _order(rec) < _order(self.best)

    def running(self) -> list[TrialRecord]:
        return [t for t in self.trials.values() if t.status == TrialStatus.RUNNING]

    def num_used(self) -> int:
        """Trials that used a budget slot (a killed trial is run again on resume)."""
        return sum(1 for t in self.trials.values() if t.status.counts_against_budget)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.trials.values():
            out[rec.status.value] = out.get(rec.status.value, 0) + 1
        return out

    def time_split(self) -> dict[str, float]:
        """Where trial wall time went: seconds to the first report, and the share spent in steps/evals."""
        ended = [t for t in self.trials.values() if t.ended is not None]
        firsts = [t.first_report_s for t in ended if t.first_report_s is not None]
        wall = work = 0.0
        for t in ended:
            if t.outcome is not None and t.ended is not None:
                wall += t.ended - t.started
                work += t.outcome.timings.train_s + t.outcome.timings.eval_s
        out = {"mean_first_report_s": sum(firsts) / len(firsts)} if firsts else {}
        if wall > 0:
            out["train_eval_share"] = work / wall
        return out


def _order(rec: TrialRecord) -> float:
    return float("inf") if rec.number is None else float(rec.number)


class ModelFiles:
    """At most the best model stays on disk (plus those of running trials); the best is published."""

    def __init__(self, models_dir: Path | None) -> None:
        self.models_dir = models_dir

    def keep_if_best(self, rec: TrialRecord, best_before: TrialRecord | None, best_now: TrialRecord | None) -> None:
        if best_now is rec:
            if best_before is not None and best_before is not rec:
                self.drop(best_before.ray_id)
        else:
            self.drop(rec.ray_id)

    def drop(self, ray_id: str) -> None:
        if self.models_dir is not None:
            shutil.rmtree(self.models_dir / ray_id, ignore_errors=True)

    def keep_only(self, best: TrialRecord | None) -> None:
        """Resume: a killed run left the model files of its running trials; only the best's are kept."""
        if self.models_dir is None or not self.models_dir.is_dir():
            return
        for path in self.models_dir.iterdir():
            if best is None or path.name != best.ray_id:
                shutil.rmtree(path, ignore_errors=True)

    def _source(self, best: TrialRecord) -> Path | None:
        """The best trial's saved model: where its outcome says, or (a resumed sweep) where it was saved."""
        candidates = [Path(best.outcome.model_dir)] if best.outcome and best.outcome.model_dir else []
        if self.models_dir is not None:
            candidates.append(self.models_dir / best.ray_id)
        return next((p for p in candidates if p.is_dir()), None)

    def publish(self, spec: SweepSpec, best: TrialRecord, run_dir: Path, recorder: Recorder) -> None:
        """Move the best trial's model/adapter to run_dir/best and log it (and best_config.yaml) to its run.

        Safe to be killed at any point: best/ is replaced whole by a rename, and the trial's own files go
        last, so a resumed sweep publishes again what a killed one did not finish."""
        target = run_dir / BEST_DIR
        source = self._source(best)
        if source is None:
            if not (target / BEST_CONFIG).is_file():
                log.debug("best trial %s left no model to publish", best.ray_id)
            return  # an earlier (resumed) run already published this best
        staging = run_dir / f".{BEST_DIR}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        config = spec.trial_config(best.params).model_dump(mode="json")
        config["output_dir"] = None
        (staging / BEST_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        shutil.copytree(source, staging / BEST_MODEL)
        shutil.rmtree(target, ignore_errors=True)  # an earlier best's files must not ride along
        staging.rename(target)
        recorder.log_artifacts(best.ray_id, target, None)  # best_config.yaml and model/
        shutil.rmtree(source, ignore_errors=True)


class Progress:
    """One console line per trial start and end."""

    def __init__(self, echo: Echo, objective: str, num_trials: int, max_retries: int = 0) -> None:
        self.echo, self.objective, self.num_trials, self.max_retries = echo, objective, num_trials, max_retries

    def started(self, rec: TrialRecord) -> None:
        if rec.retries:
            self.echo(f"trial {rec.number} started again (retry {rec.retries})")
            return
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.params.items())
        self.echo(f"trial {rec.number} started: {shown}")

    def retried(self, rec: TrialRecord, error: str) -> None:
        self.echo(
            f"trial {rec.number} failed for a transient reason ({error}); retry {rec.retries} of {self.max_retries}"
        )

    def ended(self, rec: TrialRecord, book: TrialBook) -> None:
        value = f"{self.objective}={rec.value:.4g}" if rec.value is not None else "no value"
        if rec.error:
            value = f"error: {rec.error}"
        done = book.num_used()  # a killed trial is run again: it does not fill a slot of the budget
        counts = ", ".join(f"{n} {s}" for s, n in sorted(book.counts().items()))
        best = f"best {book.best.value:.4g} (trial {book.best.number})" if book.best else "no best yet"
        self.echo(
            f"[{done}/{self.num_trials}] trial {rec.number} {rec.status} at step {rec.step}, {value}"
            f" | {counts} | {best}"
        )


class LiveView(Progress):
    """The sweep in a terminal (rich): the per-trial lines scroll above a live panel with the counts per
    status, the best so far and bars against the trial budget and the time budget. Used only when the
    output is a terminal; logs and CI get ``Progress``'s plain lines."""

    def __init__(
        self,
        book: TrialBook,
        objective: str,
        num_trials: int,
        max_retries: int,
        time_budget_s: float | None,
        console: Any = None,
    ) -> None:
        from rich.console import Console

        self.console = console or Console()
        super().__init__(self.console.print, objective, num_trials, max_retries)
        self.time_budget_s = time_budget_s
        self.book = book
        self.started_at = time.time()
        self._live: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Ray pickles the Tuner's callbacks (ours reach this view): the terminal stays behind."""
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "echo", "_live")}

    def __enter__(self) -> LiveView:
        from rich.live import Live

        self.started_at = time.time()
        self._live = Live(get_renderable=self._panel, console=self.console, refresh_per_second=2, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def _panel(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        book = self.book
        # rich redraws from its own thread while the driver adds trials: count from one snapshot
        trials = list(book.trials.values())
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        running = counts.get(TrialStatus.RUNNING.value, 0)
        done = sum(1 for t in trials if t.status.counts_against_budget)
        shown = {s.value: counts.get(s.value, 0) for s in TrialStatus if s != TrialStatus.RUNNING}
        line = "  ".join(f"{k} {v}" for k, v in shown.items() if v or k in ("completed", "pruned", "failed"))
        best = f"best {self.objective} {book.best.value:.4g} (trial {book.best.number})" if book.best else "no best yet"
        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            "trials", ProgressBar(total=self.num_trials, completed=done, width=40), f"{done}/{self.num_trials}"
        )
        elapsed = time.time() - self.started_at
        if self.time_budget_s:
            grid.add_row(
                "time",
                ProgressBar(total=self.time_budget_s, completed=min(elapsed, self.time_budget_s), width=40),
                f"{elapsed:.0f}/{self.time_budget_s:.0f}s",
            )
        else:
            grid.add_row("time", "", f"{elapsed:.0f}s")
        return Group(grid, f"running {running}  {line}", best)


class SweepObserver:
    """The Observer the Ray adapter calls: each event goes to the book, the study, the record, the
    model files and the progress line. The final report arrives parsed (``sweep.status``)."""

    def __init__(
        self, book: TrialBook, bridge: Bridge, recorder: Recorder, models: ModelFiles, progress: Progress
    ) -> None:
        self.book, self.bridge, self.recorder, self.models, self.progress = book, bridge, recorder, models, progress

    def trial_started(self, ray_id: str, params: Mapping[str, Any]) -> None:
        rec = self.book.start(ray_id, self.bridge.number(ray_id), params)
        self.recorder.start_trial(ray_id, rec.number, params)
        confirmation = self.bridge.confirmation_of(ray_id)
        if confirmation:  # the verdict's ablation of the best configuration (sweep.confirm)
            self.recorder.tag_trial(
                ray_id,
                {"sweep.confirmation": "true", **{f"sweep.confirmation.{k}": str(v) for k, v in confirmation.items()}},
            )
        self.progress.started(rec)

    def trial_reported(self, ray_id: str, step: int, metrics: Mapping[str, float]) -> None:
        self.book.report(ray_id, step, metrics)
        if "fold" in metrics:
            self.recorder.log_fold(ray_id, step, {k: v for k, v in metrics.items() if k != "fold"})
        self.recorder.log_report(ray_id, step, metrics)

    def trial_retried(self, ray_id: str, error: str, attempt: int) -> None:
        rec = self.book.trials.get(ray_id)
        if rec is None:
            log.debug("retry of unknown trial %s ignored", ray_id)
            return
        rec.retries = attempt
        error = mask(error)  # a URL in the error keeps its password out of MLflow and the console
        self.recorder.tag_trial(ray_id, {"trial.retries": str(attempt), f"trial.retry_{attempt}_reason": error[:5000]})
        self.progress.retried(rec, error)

    def trial_placed(self, ray_id: str, node_id: str, gpus: str) -> None:
        """Where Ray runs the trial: on a cluster, which node; with GPUs, which ones it sees."""
        self.recorder.tag_trial(ray_id, {"ray.node_id": node_id, "ray.cuda_visible_devices": gpus or "none"})

    def trial_finished(self, ray_id: str, final: TrialOutcome | TrialFailure | None, error: bool) -> None:
        if isinstance(final, TrialFailure):  # its text reaches the book, MLflow, Optuna and the console
            final = final.model_copy(update={"error": mask(final.error)})
        best_before = self.book.best
        pruned = not error and self.bridge.was_pruned(ray_id)
        rec = self.book.finish(ray_id, self.bridge.number(ray_id), final, pruned)
        tags: dict[str, str] = {"trial.step_reached": str(rec.step)}
        metrics: dict[str, float] = {}
        attrs: dict[str, Any] = {"retries": rec.retries} if rec.retries else {}
        if isinstance(final, TrialFailure):
            tags |= {"trial.error": final.error[:5000], "trial.failure": final.kind}
            attrs |= {"error": final.error, "failure": final.kind}
        elif isinstance(final, TrialOutcome):
            tags |= {"data.fingerprint": final.data_fingerprint, "split.fingerprint": final.split_fingerprint}
            metrics = _outcome_metrics(final)
            attrs |= {"num_steps": final.num_steps, "split_fingerprint": final.split_fingerprint}
            if rec.status == TrialStatus.DIVERGED:
                tags["trial.diverged_learning_rate"] = str(final.diverged_learning_rate)
                attrs["diverged_step"] = final.diverged_step
        self.bridge.tell(ray_id, rec.status, rec.value, attrs)
        self.recorder.end_trial(ray_id, rec.status, tags, metrics)
        self.models.keep_if_best(rec, best_before, self.book.best)
        self.progress.ended(rec, self.book)

    def end_running(self, status: TrialStatus) -> None:
        """Close trials Ray ended without a result (STOPPED: out of time; KILLED: Ctrl-C)."""
        for rec in self.book.running():
            self.book.end(rec, status)
            self.bridge.tell(rec.ray_id, status, None)
            self.recorder.end_trial(rec.ray_id, status, {"trial.step_reached": str(rec.step)}, {})
            self.models.drop(rec.ray_id)
            self.progress.ended(rec, self.book)


def _outcome_metrics(outcome: TrialOutcome) -> dict[str, float]:
    return {
        "num_steps": outcome.num_steps,
        "num_examples": outcome.num_examples,
        "peak_rss_mb": outcome.peak_rss_mb,
        **{f"time_{k}": v for k, v in outcome.timings.model_dump().items()},
        **{f"best_{k}": v for k, v in outcome.best_metrics.items()},
        **outcome.test_metrics,
    }
