"""Tune's search and scheduling over the sweep's Optuna study: a Searcher that asks the study, and the
TrialScheduler each pruner becomes (``pruners.BasePruner.asha_rungs``).

Ray's ``OptunaSearch`` builds its study with Optuna's NopPruner, so it cannot prune; here one study
(the ``StudyBridge``) is shared by the searcher (ask/tell) and the scheduler (report/should_prune).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweep.errors import SweepError
from sweep.interfaces import Bridge
from sweep.ray.worker import LAST_STEP_KEY, OUTCOME_KEY, STEP_KEY
from sweep.spec import SweepSpec

LastStepOf = Callable[[Mapping[str, Any]], int | None]
"""Sampled parameters -> the step of that trial's final report (None: the trial will reject them)."""


def mode(direction: str) -> str:
    """Ray's name for an Optuna direction."""
    return "min" if direction == "minimize" else "max"


class DriverOnly:
    """Ray pickles the searcher, scheduler and callbacks into the run dir (``tune/tuner.pkl``) for its
    own restore, which the sweep does not use (the study is its state). The live objects they hold (the
    study, whose storage URL may carry a password; the MLflow client) stay out of that file."""

    _driver_only: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        return {k: (None if k in self._driver_only else v) for k, v in self.__dict__.items()}


class OptunaSearcher(DriverOnly, Searcher):
    """Ray Searcher over the sweep's Optuna study: suggest = ask. The observer tells the study how each
    trial ended (it reads the final report once, for the study and the record alike)."""

    _driver_only = ("bridge", "last_step_of")

    def __init__(self, bridge: Bridge, mode: str, last_step_of: LastStepOf) -> None:
        # no metric for Ray: its strict check would reject the final outcome report (and a diverged
        # trial has no value); the objective is checked at the first report by the scheduler instead
        super().__init__(metric=None, mode=mode)
        self.bridge = bridge
        self.last_step_of = last_step_of

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.bridge.exhausted():
            return Searcher.FINISHED
        params = self.bridge.ask(trial_id)
        return {"params": params, LAST_STEP_KEY: self.last_step_of(params)}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Nothing here: ``SweepObserver.trial_finished`` tells the study."""

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna study (in its storage) is the searcher's whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """See ``save``; a resumed sweep re-opens the study instead."""


def _check_metric(result: Mapping[str, Any], metric: str, field: str = "objective.metric") -> None:
    if metric not in result:
        shown = sorted(k for k in result if k.startswith(("val_", "train_")))
        raise SweepError(
            f"{field}: '{metric}' is not in the trial's report (it has {shown}); set {field} to one of them"
        )


def _is_last(trial: Any, result: Mapping[str, Any]) -> bool:
    """The trial's final report: never prune there, the trial is done."""
    last = trial.config.get(LAST_STEP_KEY)
    return last is not None and int(result[STEP_KEY]) >= last


class OptunaPruningScheduler(DriverOnly, FIFOScheduler):
    """Passes every report to the Optuna trial and stops the Ray trial when Optuna's pruner says so."""

    _driver_only = ("bridge",)

    def __init__(self, bridge: Bridge, objective: str, judged: str | None = None) -> None:
        super().__init__()
        self.bridge = bridge
        self.objective = objective  # Ray's `metric` is a read-only property
        self.judged = judged or objective  # the pruner's metric (pruner.metric, else the objective)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if OUTCOME_KEY in result:
            return TrialScheduler.CONTINUE
        _check_metric(result, self.objective)
        _check_metric(result, self.judged, "pruner.metric")
        step = int(result[STEP_KEY])
        prune = self.bridge.report(trial.trial_id, float(result[self.objective]), step, float(result[self.judged]))
        if prune and not _is_last(trial, result):
            return TrialScheduler.STOP
        self.bridge.clear_pruned(trial.trial_id)
        return TrialScheduler.CONTINUE


class RecordingASHA(DriverOnly, ASHAScheduler):
    """Ray's ASHA, with its stops recorded as prunes and every value kept in the Optuna study."""

    _driver_only = ("bridge",)

    def __init__(
        self, bridge: Bridge, objective: str, mode: str, max_t: int, grace: int, factor: int, judged: str | None = None
    ) -> None:
        """ASHA compares trials on ``judged`` (pruner.metric, else the objective) in ``mode``."""
        super().__init__(
            time_attr=STEP_KEY,
            metric=judged or objective,
            mode=mode,
            max_t=max_t,
            grace_period=grace,
            reduction_factor=factor,
        )
        self.bridge = bridge
        self.objective = objective
        self.judged = judged or objective

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if OUTCOME_KEY in result:
            return TrialScheduler.CONTINUE
        _check_metric(result, self.objective)
        _check_metric(result, self.judged, "pruner.metric")
        self.bridge.report(trial.trial_id, float(result[self.objective]), int(result[STEP_KEY]))
        self.bridge.clear_pruned(trial.trial_id)  # Optuna's own pruner is not the judge here
        decision = super().on_trial_result(tune_controller, trial, result)
        if _is_last(trial, result) or self.bridge.confirmation_of(trial.trial_id):
            return TrialScheduler.CONTINUE  # done anyway, or a confirmation (it runs to its end)
        if decision == TrialScheduler.STOP:
            self.bridge.mark_pruned(trial.trial_id)
        return decision


def build_scheduler(spec: SweepSpec, bridge: Bridge, max_last_step: int) -> TrialScheduler:
    """The scheduler the spec's pruner becomes; ``max_last_step`` is the largest step any trial of the
    space reports (ASHA's max_t)."""
    objective = spec.objective.metric
    judged, judged_direction = spec.pruner.judged(objective, spec.objective.direction)
    rungs = spec.pruner.asha_rungs()
    if rungs is None:
        return OptunaPruningScheduler(bridge, objective, judged)
    return RecordingASHA(
        bridge,
        objective,
        mode(judged_direction),
        max_last_step,
        rungs.min_resource,
        rungs.reduction_factor,
        judged=judged,
    )
