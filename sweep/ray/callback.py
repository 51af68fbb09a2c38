"""Tune's trial events -> the sweep's observer, in the driver (one place writes the record); how a trial
that Ray ended with an error failed; and the per-trial time limit."""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import tune

from sweep.interfaces import Observer
from sweep.ray import _compat
from sweep.ray.search import DriverOnly
from sweep.ray.worker import GPUS_KEY, NODE_KEY, OUTCOME_KEY, STEP_KEY
from sweep.status import TrialFailure, parse_final_report
from trainers.api import TrialOutcome, is_out_of_memory


class EventCallback(DriverOnly, tune.Callback):
    """Ray trial events -> the observer. Also the per-trial time limit: a trial past ``trial_timeout_s``
    has its worker killed and ends as ``timeout``."""

    _driver_only = ("observer",)

    def __init__(self, observer: Observer, trial_timeout_s: float | None = None) -> None:
        self.observer = observer
        self.trial_timeout_s = trial_timeout_s
        self.finals: dict[str, TrialOutcome | TrialFailure] = {}  # parsed final reports until the trial ends
        self.started: dict[str, float] = {}  # per attempt
        self.timed_out: set[str] = set()
        self.placed: dict[str, tuple[str, str]] = {}  # where each trial's current attempt runs
        self.retries: dict[str, int] = {}  # failures seen per trial (where Ray's own count is not at hand)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.monotonic()
        self.observer.trial_started(trial.trial_id, trial.config.get("params", {}))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        placement = (str(result.get(NODE_KEY, "")), str(result.get(GPUS_KEY, "")))
        if placement[0] and self.placed.get(trial.trial_id) != placement:
            self.placed[trial.trial_id] = placement
            self.observer.trial_placed(trial.trial_id, placement[0], placement[1])
        if OUTCOME_KEY in result:
            self.finals[trial.trial_id] = parse_final_report(result[OUTCOME_KEY])
            return
        metrics = {k: float(v) for k, v in result.items() if k.startswith(("val_", "train_")) or k == "fold"}
        self.observer.trial_reported(trial.trial_id, int(result[STEP_KEY]), metrics)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.observer.trial_finished(trial.trial_id, self.finals.pop(trial.trial_id, None), error=False)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        failure = failure_of(_compat.last_error(trial), timed_out=False)
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        attempt = _compat.num_failures(trial, counted=self.retries[trial.trial_id])
        self.observer.trial_retried(trial.trial_id, failure.error, attempt)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        final = self.finals.pop(trial.trial_id, None)
        if final is None:  # Ray lost the trial (worker died, memory monitor, our time limit)
            final = failure_of(_compat.last_error(trial), timed_out=trial.trial_id in self.timed_out)
        self.observer.trial_finished(trial.trial_id, final, error=True)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.trial_timeout_s is None:
            return
        now = time.monotonic()
        for trial in trials:
            began = self.started.get(trial.trial_id)
            if (
                trial.status != "RUNNING"
                or began is None
                or trial.trial_id in self.timed_out
                or now - began < self.trial_timeout_s
            ):
                continue
            actor = _compat.trial_actor(trial)
            if actor is None:
                continue
            self.timed_out.add(trial.trial_id)
            _compat.no_more_retries(trial)  # a trial that hangs would hang again
            ray.kill(actor, no_restart=True)  # a hung trial answers no stop request; Ray ends it as an error

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Trials that sent their final report before Ray stopped them (the time budget ran out as they
        finished) ended as that report says, not as stopped."""
        for trial_id, final in list(self.finals.items()):
            self.observer.trial_finished(trial_id, final, error=False)
        self.finals.clear()


def failure_of(exc: BaseException | None, timed_out: bool) -> TrialFailure:
    """A trial Ray ended with an error -> its failure: timeout (ours), oom (CUDA, or Ray's memory
    monitor killed the worker), worker lost (the process died), or the exception it raised."""
    if timed_out:
        return TrialFailure(status="timeout", error="stopped by budget.trial_timeout_s", kind="timeout")
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        exc = exc.cause  # what the trial raised, without Ray's wrapper and its colored header
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "the trial's worker ended without a result"
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)[:2000]
    if exc is not None and is_out_of_memory(exc):
        return TrialFailure(status="oom", error=line, kind="oom")
    if exc is None or isinstance(exc, ray.exceptions.RayActorError):
        return TrialFailure(error=f"worker lost: {line}", kind="worker_lost")
    return TrialFailure(error=line, kind="exception")
