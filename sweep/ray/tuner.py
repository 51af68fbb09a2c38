"""The Tuner of one sweep phase: the trainable (``worker``), the study's searcher and the pruner's
scheduler (``search``), and the callback that records trial events (``callback``), wired together."""

from __future__ import annotations

from pathlib import Path

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from sweep.interfaces import Bridge, Observer
from sweep.ray.callback import EventCallback
from sweep.ray.search import LastStepOf, OptunaSearcher, build_scheduler, mode
from sweep.ray.worker import trainable
from sweep.spec import SweepSpec


def run_tuner(
    spec: SweepSpec,
    bridge: Bridge,
    observer: Observer,
    *,
    num_trials: int,
    max_last_step: int,
    last_step_of: LastStepOf,
    run_dir: Path,
    models_dir: Path | None,
    split_file: Path | None = None,
    name: str = "tune",
    time_budget_s: float | None = None,
) -> None:
    """Run ``num_trials`` trials of ``spec`` on Ray Tune, Optuna sampling and pruning through ``bridge``.
    ``name``: the Tune experiment's folder in the run dir (the search's, or its confirmations');
    ``time_budget_s``: what is left of the sweep's time budget (None: the spec's).

    ``max_last_step`` is the largest step any trial of the space reports (ASHA's max_t). ``split_file``:
    the data check's split of the data, which trials of that data and split config load (a worker that
    cannot read it, on another machine say, splits the data itself).
    """
    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={
            "template": spec.trial_template(),
            "models_dir": str(models_dir.resolve()) if models_dir else "",
            "split_file": str(split_file.resolve()) if split_file else "",
            # out of memory is transient only while other trials share the device
            "retry_oom": spec.budget.max_concurrent_trials > 1 and spec.budget.max_retries > 0,
        },
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearcher(bridge, mode(spec.objective.direction), last_step_of),
            scheduler=build_scheduler(spec, bridge, max_last_step),
            num_samples=num_trials,
            max_concurrent_trials=spec.budget.max_concurrent_trials,
            reuse_actors=True,
            time_budget_s=spec.budget.time_budget_s if time_budget_s is None else time_budget_s,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(run_dir.resolve()),
            callbacks=[
                EventCallback(observer, spec.budget.trial_timeout_s),
                CSVLoggerCallback(),  # each trial's progress.csv and result.json, as Tune writes them by default
                JsonLoggerCallback(),
            ],
            verbose=0,
            # only transient failures reach Ray: the trainable reports the others as its outcome
            failure_config=tune.FailureConfig(max_failures=spec.budget.max_retries),
        ),
    )
    tuner.fit()
