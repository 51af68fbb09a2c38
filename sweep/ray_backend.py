"""The only ``import ray``: the Tuner, our Optuna-backed Searcher, the pruning TrialScheduler, and a
callback that forwards trial events to the sweep's observer (which records them in MLflow).

Ray's ``OptunaSearch`` builds its study with Optuna's NopPruner, so it cannot prune; here one study
(the ``StudyBridge``) is shared by the searcher (ask/tell) and the scheduler (report/should_prune).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweep.spec import SweepError, SweepSpec

OUTCOME_KEY = "outcome"
STEP_KEY = "step"


class Bridge(Protocol):
    pruned: set[str]

    def ask(self, ray_id: str) -> dict[str, Any]: ...
    def exhausted(self) -> bool: ...
    def report(self, ray_id: str, value: float, step: int) -> bool: ...
    def tell(self, ray_id: str, status: str, value: float | None, attrs: Mapping[str, Any] | None = None) -> None: ...


class Observer(Protocol):
    """The sweep's side of trial events (recording, progress)."""

    def trial_started(self, ray_id: str, params: Mapping[str, Any]) -> None: ...
    def trial_reported(self, ray_id: str, step: int, metrics: Mapping[str, float]) -> None: ...
    def trial_finished(self, ray_id: str, outcome_json: str | None, error: bool) -> None: ...


# --- inside the trial process ---------------------------------------------------------------------


class _TuneReporter:
    """trainers' Reporter -> ray.tune.report; the step rides along so schedulers see optimizer steps."""

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        tune.report({**metrics, STEP_KEY: step})


def trainable(config: dict[str, Any]) -> None:
    """One trial in a Ray worker: build its TrialConfig, run it, report the outcome last.

    Worker processes are reused across trials (reuse_actors), so trainers' caches of tokenized data
    and base weights serve every trial after the first in that process.
    """
    from sweep.space import as_overrides, merge
    from trainers.config import ConfigError, trial_config_from_dict
    from trainers.loop import run_trial

    overrides = as_overrides(config["params"])
    if config.get("models_dir"):
        trial_id = tune.get_context().get_trial_id()
        overrides = merge(overrides, {"output_dir": str(Path(config["models_dir"]) / trial_id)})
    try:
        cfg = trial_config_from_dict(merge(config["template"], overrides))
        outcome = run_trial(cfg, _TuneReporter())
    except ConfigError as exc:
        # a combination the space allows but the trial rejects: a failed trial with its reason, not a crash
        _report_failure("; ".join(exc.problems))
        return
    except Exception as exc:  # e.g. CUDA out of memory: the sweep goes on, the record says why
        traceback.print_exc()  # the whole story, in the worker's log under the run dir
        _report_failure(f"{type(exc).__name__}: {exc}")
        return
    tune.report({OUTCOME_KEY: outcome.model_dump_json(), STEP_KEY: outcome.num_steps})


def _report_failure(error: str) -> None:
    tune.report({OUTCOME_KEY: json.dumps({"status": "failed", "error": error}), STEP_KEY: 0})


# --- in the driver --------------------------------------------------------------------------------


class OptunaSearcher(Searcher):
    """Ray Searcher over the sweep's Optuna study: suggest = ask, complete = tell."""

    def __init__(self, bridge: Bridge, metric: str, mode: str) -> None:
        # no metric for Ray: its strict check would reject the final outcome report (and a diverged
        # trial has no value); the objective is checked at the first report by the scheduler instead
        super().__init__(metric=None, mode=mode)
        self.objective = metric
        self.bridge = bridge

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.bridge.exhausted():
            return Searcher.FINISHED
        return {"params": self.bridge.ask(trial_id)}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna study (in its storage) is the searcher's whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """See ``save``; a resumed sweep re-opens the study instead."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        from trainers.api import TrialOutcome

        payload = json.loads(result[OUTCOME_KEY]) if result and OUTCOME_KEY in result else None
        if payload is not None and payload["status"] == "failed":
            self.bridge.tell(trial_id, "failed", None, {"error": payload["error"]})
        elif payload is not None:
            outcome = TrialOutcome.model_validate(payload)
            value = outcome.final_metrics.get(self.objective)
            attrs = {"num_steps": outcome.num_steps, "split_fingerprint": outcome.split_fingerprint}
            if outcome.status == "diverged":
                attrs["diverged_step"] = outcome.diverged_step
            self.bridge.tell(trial_id, outcome.status, value, attrs)
        elif trial_id in self.bridge.pruned:
            self.bridge.tell(trial_id, "pruned", None)
        else:
            self.bridge.tell(trial_id, "failed", None)


def _check_metric(result: Mapping[str, Any], metric: str) -> None:
    if metric not in result:
        shown = sorted(k for k in result if k.startswith(("val_", "train_")))
        raise SweepError(
            f"objective.metric: '{metric}' is not in the trial's report (it has {shown}); "
            f"set objective.metric to one of them"
        )


def _last_step(config: Mapping[str, Any]) -> int | None:
    """The step of a trial's final report: never prune there, the trial is done."""
    template, params = config.get("template", {}), config.get("params", {})
    folds = params.get("split.num_folds", template.get("split", {}).get("num_folds"))
    if folds:
        return int(folds) - 1
    steps = params.get("optim.max_steps", template.get("optim", {}).get("max_steps"))
    return int(steps) if steps else None


def _is_last(trial: Any, result: Mapping[str, Any]) -> bool:
    last = _last_step(trial.config)
    return last is not None and int(result[STEP_KEY]) >= last


class OptunaPruningScheduler(FIFOScheduler):
    """Passes every report to the Optuna trial and stops the Ray trial when Optuna's pruner says so."""

    def __init__(self, bridge: Bridge, objective: str) -> None:
        super().__init__()
        self.bridge = bridge
        self.objective = objective  # Ray's `metric` is a read-only property

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if OUTCOME_KEY in result:
            return TrialScheduler.CONTINUE
        _check_metric(result, self.objective)
        prune = self.bridge.report(trial.trial_id, float(result[self.objective]), int(result[STEP_KEY]))
        if prune and not _is_last(trial, result):
            return TrialScheduler.STOP
        self.bridge.pruned.discard(trial.trial_id)
        return TrialScheduler.CONTINUE


class RecordingASHA(ASHAScheduler):
    """Ray's ASHA, with its stops recorded as prunes and every value kept in the Optuna study."""

    def __init__(self, bridge: Bridge, objective: str, mode: str, max_t: int, grace: int, factor: int) -> None:
        super().__init__(
            time_attr=STEP_KEY, metric=objective, mode=mode, max_t=max_t, grace_period=grace, reduction_factor=factor
        )
        self.bridge = bridge
        self.objective = objective

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if OUTCOME_KEY in result:
            return TrialScheduler.CONTINUE
        _check_metric(result, self.objective)
        self.bridge.report(trial.trial_id, float(result[self.objective]), int(result[STEP_KEY]))
        self.bridge.pruned.discard(trial.trial_id)  # Optuna's own pruner is not the judge here
        decision = super().on_trial_result(tune_controller, trial, result)
        if _is_last(trial, result):
            return TrialScheduler.CONTINUE  # done anyway: let it report its outcome
        if decision == TrialScheduler.STOP:
            self.bridge.pruned.add(trial.trial_id)
        return decision


class _EventCallback(tune.Callback):
    """Ray trial events -> the observer, in the driver (one place writes the record)."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.observer.trial_started(trial.trial_id, trial.config.get("params", {}))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if OUTCOME_KEY in result:
            trial.custom_outcome = result[OUTCOME_KEY]
            return
        metrics = {k: float(v) for k, v in result.items() if k.startswith(("val_", "train_")) or k == "fold"}
        self.observer.trial_reported(trial.trial_id, int(result[STEP_KEY]), metrics)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.observer.trial_finished(trial.trial_id, getattr(trial, "custom_outcome", None), error=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.observer.trial_finished(trial.trial_id, None, error=True)


def _temp_dir(run_dir: Path) -> str:
    """Ray's temp dir, reachable as run_dir/ray. Ray puts unix sockets ~62 characters below it and
    a socket path may not exceed 107 bytes, so a long run dir gets a short real path in /tmp and
    run_dir/ray links to it."""
    link = run_dir.resolve() / "ray"
    if len(str(link)) <= 40:
        link.mkdir(parents=True, exist_ok=True)
        return str(link)
    digest = hashlib.sha1(str(link).encode()).hexdigest()[:10]
    short = Path(tempfile.gettempdir()) / f"fsweep-{digest}"
    short.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(short, target_is_directory=True)
    return str(short)


def start_ray(address: str | None, run_dir: Path, dashboard: bool) -> str:
    """Start local Ray in the run dir (or connect to ``address``); returns the dashboard URL or ""."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C reaches us: runs end KILLED
    # the final outcome report carries no objective (a diverged trial has none); we check the
    # objective ourselves at the first report instead
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # relative data paths mean what they meant to the user
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    if ray.is_initialized():
        return ""
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "local"):
        # the dashboard comes with ray[default]; without it Ray runs headless
        has_dashboard = dashboard and importlib.util.find_spec("aiohttp") is not None
        info = ray.init(
            address="local",
            include_dashboard=has_dashboard,
            dashboard_host="127.0.0.1",
            _temp_dir=_temp_dir(run_dir),
            **kwargs,
        )
    else:
        info = ray.init(address=address, **kwargs)
    url = getattr(info, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def run_tuner(
    spec: SweepSpec,
    bridge: Bridge,
    observer: Observer,
    *,
    num_trials: int,
    max_steps: int,
    run_dir: Path,
    models_dir: Path | None,
) -> None:
    """Run ``num_trials`` trials of ``spec`` on Ray Tune, Optuna sampling and pruning through ``bridge``."""
    objective = spec.objective.metric
    mode = "min" if spec.objective.direction == "minimize" else "max"
    scheduler: TrialScheduler
    if spec.pruner.kind == "asha":
        scheduler = RecordingASHA(
            bridge, objective, mode, max_steps, spec.pruner.min_resource, spec.pruner.reduction_factor
        )
    else:
        scheduler = OptunaPruningScheduler(bridge, objective)
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"template": spec.trial_template(), "models_dir": str(models_dir.resolve()) if models_dir else ""},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearcher(bridge, objective, mode),
            scheduler=scheduler,
            num_samples=num_trials,
            max_concurrent_trials=spec.budget.max_concurrent_trials,
            reuse_actors=True,
            time_budget_s=spec.budget.time_budget_s,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(run_dir.resolve()),
            callbacks=[_EventCallback(observer)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()
