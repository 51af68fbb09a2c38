"""The only ``import optuna``: the sweep's study (sampler + pruner) and ask/tell bookkeeping."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, is_conditional, sample
from sweep.spec import Pruner, Sampler, SweepSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

RAY_ID_ATTR = "ray_trial_id"


def make_sampler(cfg: Sampler, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
    """Seeded sampler; TPE is multivariate and grouped when the space is conditional."""
    if cfg.kind == "tpe":
        with warnings.catch_warnings():  # `group` is "experimental" since Optuna 2.8; it is what conditionals need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=cfg.seed,
                n_startup_trials=cfg.num_startup_trials,
                multivariate=True,
                group=is_conditional(space),
            )
    if cfg.kind == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.kind == "grid":
        return _AskTellGridSampler(_grid(space), seed=cfg.seed)
    if cfg.kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=cfg.seed, n_startup_trials=cfg.num_startup_trials)
    return optuna.samplers.GPSampler(seed=cfg.seed, n_startup_trials=cfg.num_startup_trials)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler calls ``study.stop()`` when the grid is done, which only works inside
    ``study.optimize``; with ask/tell the searcher checks ``is_exhausted`` instead."""

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        return None


def _grid(space: Mapping[str, Param]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for path, p in space.items():
        if isinstance(p, CategoricalParam):
            grid[path] = list(p.choices)
        elif isinstance(p, IntParam):
            grid[path] = list(range(p.low, p.high + 1, p.step))
        elif isinstance(p, FloatParam) and p.step is not None:
            count = math.floor((p.high - p.low) / p.step + 1e-9) + 1
            grid[path] = [p.low + i * p.step for i in range(count)]
        elif isinstance(p, FixedParam):
            continue
    return grid


def make_pruner(cfg: Pruner, max_steps: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``cfg.kind``; 'asha' is Ray's scheduler and 'none' prunes nothing."""
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.num_startup_trials, n_warmup_steps=cfg.warmup_steps)
    if cfg.kind == "percentile":
        return optuna.pruners.PercentilePruner(
            cfg.percentile, n_startup_trials=cfg.num_startup_trials, n_warmup_steps=cfg.warmup_steps
        )
    if cfg.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=cfg.min_resource, reduction_factor=cfg.reduction_factor
        )
    if cfg.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource, max_resource=max_steps, reduction_factor=cfg.reduction_factor
        )
    if cfg.kind == "wilcoxon":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=cfg.p_threshold)
    return optuna.pruners.NopPruner()


def open_study(spec: SweepSpec, storage: str, study_name: str, max_steps: int) -> optuna.Study:
    """Create (or re-open, for resume) the sweep's study."""
    return optuna.create_study(
        study_name=study_name,
        storage=_storage(storage),
        sampler=make_sampler(spec.sampler, spec.space),
        pruner=make_pruner(spec.pruner, max_steps),
        direction=spec.objective.direction,
        load_if_exists=True,
    )


def _storage(url: str) -> Any:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


class StudyBridge:
    """Ask/tell between Ray trial ids and Optuna trials: one Optuna trial per Ray trial, never two.

    Used by the searcher (ask, tell) and the pruning scheduler (report, should_prune) in the driver.
    """

    def __init__(self, study: optuna.Study, space: Mapping[str, Param]) -> None:
        self.study = study
        self.space = space
        self._trials: dict[str, optuna.Trial] = {}
        self._params: dict[str, dict[str, Any]] = {}
        self.pruned: set[str] = set()
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # a sweep that was interrupted: its running trials will not report again
            study.tell(frozen.number, state=TrialState.FAIL)

    def exhausted(self) -> bool:
        """True when a grid has no unasked point left (other samplers never run out)."""
        sampler = self.study.sampler
        return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study)

    def ask(self, ray_id: str) -> dict[str, Any]:
        """Sampled parameters for ``ray_id`` (the same ones again if Ray retries the trial)."""
        if ray_id not in self._trials:
            trial = self.study.ask()
            trial.set_user_attr(RAY_ID_ATTR, ray_id)
            self._trials[ray_id] = trial
            self._params[ray_id] = sample(self.space, trial)
        return dict(self._params[ray_id])

    def number(self, ray_id: str) -> int | None:
        trial = self._trials.get(ray_id)
        return trial.number if trial is not None else None

    def report(self, ray_id: str, value: float, step: int) -> bool:
        """Pass an intermediate value to the study; True when the pruner says stop."""
        trial = self._trials.get(ray_id)
        if trial is None or not math.isfinite(value):
            return False
        trial.report(value, step)
        if trial.should_prune():
            self.pruned.add(ray_id)
            return True
        return False

    def tell(self, ray_id: str, status: str, value: float | None, attrs: Mapping[str, Any] | None = None) -> None:
        """End the Optuna trial: completed -> COMPLETE(value), pruned -> PRUNED, else FAIL."""
        trial = self._trials.pop(ray_id, None)
        if trial is None:
            return
        for key, attr in (attrs or {}).items():
            trial.set_user_attr(key, attr)
        trial.set_user_attr("status", status)
        if status == "completed" and value is not None and math.isfinite(value):
            self.study.tell(trial, value)
        elif status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:  # diverged or failed: never a candidate for best
            self.study.tell(trial, state=TrialState.FAIL)

    def finished_trials(self) -> list[dict[str, Any]]:
        """Trials an earlier (interrupted) run of this sweep already finished, for resume."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state == TrialState.RUNNING:
                continue
            # a FAIL without our status was left running by an interrupted run: killed, not a result
            status = t.user_attrs.get("status", "killed" if t.state == TrialState.FAIL else t.state.name.lower())
            out.append(
                {
                    "number": t.number,
                    "ray_id": t.user_attrs.get(RAY_ID_ATTR, str(t.number)),
                    "params": dict(t.params),
                    "status": status,
                    "value": t.value,
                    "step": t.last_step,
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        states = [t.state.name.lower() for t in self.study.get_trials(deepcopy=False)]
        return {s: states.count(s) for s in sorted(set(states))}
