"""Inside a Ray worker: the trainable that runs one trial, its reporter, and the worker's start-up hook.

The keys of a trial's reports are named here; the driver's scheduler and callback read them.
"""

from __future__ import annotations

import gc
import os
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweep.status import TrialFailure
from trainers.api import is_out_of_memory

OUTCOME_KEY = "outcome"  # the trial's last report: its outcome (or failure) as JSON
STEP_KEY = "step"
LAST_STEP_KEY = "last_step"  # in the trial's config: the step of its final report
NODE_KEY = "ray_node_id"
GPUS_KEY = "cuda_visible_devices"

WARM_HOOK = f"{__name__}.warm_worker"
"""The setup hook of a local sweep's workers (``session.start_ray``)."""

GC_FREEZE_ENV = "SWEEP_WORKER_GC_FREEZE"
"""``0``: a worker leaves Python's cyclic collector as Python sets it (on while the trial code is imported,
nothing frozen). Unset or ``1``: ``warm_worker`` and ``_settle_worker`` below. Read in the worker, which
inherits it from the driver that starts a local Ray."""


def _freezes() -> bool:
    return os.environ.get(GC_FREEZE_ENV, "1") != "0"


def _placement() -> dict[str, str]:
    """Where Ray placed this trial: its node, and the GPUs it may use as the trial sees them."""
    return {NODE_KEY: ray.get_runtime_context().get_node_id(), GPUS_KEY: os.environ.get("CUDA_VISIBLE_DEVICES", "")}


class _TuneReporter:
    """trainers' Reporter -> ray.tune.report; the step rides along so schedulers see optimizer steps, and
    the trial's placement so the record says where it ran."""

    def __init__(self) -> None:
        self.placement = _placement()

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        tune.report({**metrics, STEP_KEY: step, **self.placement})


def trainable(config: dict[str, Any]) -> None:
    """One trial in a Ray worker: build its TrialConfig, run it, report the outcome last.

    Worker processes are reused across trials (reuse_actors), so trainers' caches of tokenized data
    and base weights serve every trial after the first in that process.
    """
    from sweep.space import compose
    from trainers.config import trial_config_from_dict
    from trainers.errors import ConfigError
    from trainers.loop import release_memory, run_trial

    _settle_worker()
    release_memory()  # what the worker's previous trial left, also when it was stopped (pruned)
    output_dir = str(Path(config["models_dir"]) / tune.get_context().get_trial_id()) if config["models_dir"] else None
    try:
        cfg = trial_config_from_dict(compose(config["template"], config["params"], output_dir))
        reporter = _TuneReporter()
        final = run_trial(cfg, reporter, config.get("split_file") or None).model_dump_json()
    except ConfigError as exc:
        # a combination the space allows but the trial rejects: a failed trial with its reason, not a crash
        final = TrialFailure(error="; ".join(exc.problems), kind="config").model_dump_json()
    except Exception as exc:  # the sweep goes on, the record says why
        traceback.print_exc()  # the whole story, in the worker's log under the run dir
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        if not is_out_of_memory(exc):
            final = TrialFailure(error=error, kind="exception").model_dump_json()
        elif config["retry_oom"]:
            raise  # other trials share the device: transient, Ray runs it again (budget.max_retries)
        else:
            final = TrialFailure(status="oom", error=error, kind="oom").model_dump_json()
    release_memory()  # this worker runs the next trial (reuse_actors)
    tune.report({OUTCOME_KEY: final, **_placement()})


_settled = False  # this worker's first trial has started (``_settle_worker``)


def _settle_worker() -> None:
    """A worker's trial starts. At its first, what exists (the worker's imports, Tune's actor) lives about
    as long as the worker, so the cyclic collector leaves those objects alone from then on (``gc.freeze``):
    otherwise every full collection, one at each ``release_memory`` at a trial's start and end, walks all
    the objects the imports made. Where no hook paused the collector (a cluster's own runtime env, a Ray
    already running), one collection comes first, so no garbage is frozen. The collector is on for every
    trial (``warm_worker`` paused it)."""
    global _settled
    if _settled or not _freezes():
        gc.enable()
        return
    if gc.isenabled():
        gc.collect()
    _settled = True
    gc.freeze()
    gc.enable()


def warm_worker() -> None:
    """Each worker of a local sweep imports the trial code as it starts (Ray's worker_process_setup_hook),
    before Tune hands it the trial; the cyclic collector waits for the trial (``_settle_worker``): the
    imports make many objects that live as long as the worker, and collections while they are made would
    find almost nothing. The few cycles left unreachable meanwhile stay with the worker, frozen."""
    if _freezes():
        gc.disable()
    import trainers.loop  # noqa: F401  (torch, transformers, peft)
