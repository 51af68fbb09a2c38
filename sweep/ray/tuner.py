"""The only ``import ray``: the Tuner, our Optuna-backed Searcher, the pruning TrialScheduler, and a
callback that forwards trial events to the sweep's observer (which records them in MLflow).

Ray's ``OptunaSearch`` builds its study with Optuna's NopPruner, so it cannot prune; here one study
(the ``StudyBridge``) is shared by the searcher (ask/tell) and the scheduler (report/should_prune).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import inspect
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweep.interfaces import Bridge, Observer
from sweep.pruners import AshaPruner
from sweep.spec import SweepError, SweepSpec
from sweep.status import TrialFailure, parse_final_report
from trainers.api import TrialOutcome, is_out_of_memory

log = logging.getLogger(__name__)

OUTCOME_KEY = "outcome"
STEP_KEY = "step"
LAST_STEP_KEY = "last_step"
NODE_KEY = "ray_node_id"
GPUS_KEY = "cuda_visible_devices"
RAY_DIR = "ray"  # a link to Ray's session files (in /tmp: unix socket paths must be short) while the sweep runs
RAY_LOGS_DIR = "ray-logs"  # Ray's logs (the trials' tracebacks), kept when the /tmp stand-in is removed

LastStepOf = Callable[[Mapping[str, Any]], int | None]
"""Sampled parameters -> the step of that trial's final report (None: the trial will reject them)."""


# --- inside the trial process ---------------------------------------------------------------------


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
    from trainers.config import ConfigError, trial_config_from_dict
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
    without this, every full collection walked the ~480,000 import-time objects, 0.25 CPU-s for each
    ``release_memory`` at a trial's start and end. Where no hook paused the collector (a cluster's own
    runtime env, a Ray already running), one collection comes first, so no garbage is frozen. The
    collector is on for every trial (``warm_worker`` paused it)."""
    global _settled
    if not _settled:
        if gc.isenabled():
            gc.collect()
        _settled = True
        gc.freeze()
    gc.enable()


# --- in the driver --------------------------------------------------------------------------------


class _DriverOnly:
    """Ray pickles the searcher, scheduler and callbacks into the run dir (``tune/tuner.pkl``) for its
    own restore, which the sweep does not use (the study is its state). The live objects they hold (the
    study, whose storage URL may carry a password; the MLflow client) stay out of that file."""

    _driver_only: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        return {k: (None if k in self._driver_only else v) for k, v in self.__dict__.items()}


class OptunaSearcher(_DriverOnly, Searcher):
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


class OptunaPruningScheduler(_DriverOnly, FIFOScheduler):
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


class RecordingASHA(_DriverOnly, ASHAScheduler):
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


class _EventCallback(_DriverOnly, tune.Callback):
    """Ray trial events -> the observer, in the driver (one place writes the record). Also the per-trial
    time limit: a trial past ``trial_timeout_s`` has its worker killed and ends as ``timeout``."""

    _driver_only = ("observer",)

    def __init__(self, observer: Observer, trial_timeout_s: float | None = None) -> None:
        self.observer = observer
        self.trial_timeout_s = trial_timeout_s
        self.finals: dict[str, TrialOutcome | TrialFailure] = {}  # parsed final reports until the trial ends
        self.started: dict[str, float] = {}  # per attempt
        self.timed_out: set[str] = set()
        self.placed: dict[str, tuple[str, str]] = {}  # where each trial's current attempt runs

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
        failure = _failure(_last_error(trial), timed_out=False)
        self.observer.trial_retried(trial.trial_id, failure.error, trial.run_metadata.num_failures)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        final = self.finals.pop(trial.trial_id, None)
        if final is None:  # Ray lost the trial (worker died, memory monitor, our time limit)
            final = _failure(_last_error(trial), timed_out=trial.trial_id in self.timed_out)
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
            actor = trial.temporary_state.ray_actor
            if actor is None:
                continue
            self.timed_out.add(trial.trial_id)
            trial.max_failures = 0  # a trial that hangs would hang again: no retry
            ray.kill(actor, no_restart=True)  # a hung trial answers no stop request; Ray ends it as an error

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Trials that sent their final report before Ray stopped them (the time budget ran out as they
        finished) ended as that report says, not as stopped."""
        for trial_id, final in list(self.finals.items()):
            self.observer.trial_finished(trial_id, final, error=False)
        self.finals.clear()


def _last_error(trial: Any) -> BaseException | None:
    """The exception Ray pickled for the trial's latest failure (driver-local until Ray syncs it)."""
    import cloudpickle

    local = trial.pickled_error_file
    try:
        if local and Path(local).is_file():
            return cloudpickle.loads(Path(local).read_bytes())
        return trial.get_pickled_error()
    except Exception:  # an exception that does not unpickle: classified as a lost worker
        log.debug("could not read the error of trial %s", trial.trial_id, exc_info=True)
        return None


def _failure(exc: BaseException | None, timed_out: bool) -> TrialFailure:
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


def _keep_logs(short: Path, run_dir: Path | None) -> None:
    """Remove the /tmp stand-in and its link, keeping a copy of Ray's logs in the run dir (if there is one)."""
    if run_dir is not None:
        for found in short.glob("session_*/logs"):
            if found.is_dir() and not found.parent.is_symlink():
                shutil.copytree(found, run_dir / RAY_LOGS_DIR / found.parent.name, symlinks=True, dirs_exist_ok=True)
        link = run_dir / RAY_DIR
        if link.is_symlink() and Path(os.readlink(link)) == short:
            link.unlink()
    shutil.rmtree(short, ignore_errors=True)


WARM_HOOK = f"{__name__}.warm_worker"
"""The setup hook of a local sweep's workers (the benchmark's variants change it)."""


def warm_worker() -> None:
    """Each worker of a local sweep imports the trial code as it starts (Ray's worker_process_setup_hook),
    before Tune hands it the trial; the cyclic collector waits for the trial (``_settle_worker``). Those
    imports make ~480,000 objects that live as long as the worker, and collecting while they were made
    took ~1 of the ~5.5 CPU-s a worker needed before its first step. The few cycles left unreachable
    meanwhile (~13,000 objects, under 1 MB) stay with the worker, frozen."""
    gc.disable()
    import trainers.loop  # noqa: F401  (torch, transformers, peft)


CONNECT_RETRY = {
    "RAY_raylet_client_connect_timeout_milliseconds": "50",  # between two attempts (Ray's default: 1000)
    "RAY_raylet_client_num_connect_attempts": "200",  # 10 s in all, as Ray's 10 x 1 s
}
"""How often Ray's socket clients try to connect (``_set_env``)."""


def _set_env() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C reaches us: runs end KILLED
    # the final outcome report carries no objective (a diverged trial has none); we check the
    # objective ourselves at the first report instead
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # relative data paths mean what they meant to the user
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # Tune's automatic loggers include TensorBoardX's, whose import loads torch into the driver (~2 CPU-s
    # and ~150 MB while the first trials start); run_tuner adds the CSV and JSON ones itself
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # the workers of a Ray this session starts allocate with the jemalloc Ray ships (and runs its own
    # processes on), not glibc's malloc: a CPU trial's per-shape bf16 temporaries fragment glibc's heap.
    # Measured on the SST-2 benchmark: a 6-layer trial's worker 624 -> 529 MB after 80 steps (kernel
    # caches capped); the sweep's peak 2.69 -> 2.47 GiB (PSS), the same results, ~5% more wall.
    # RAY_LD_PRELOAD_ON_WORKERS=0 takes it back.
    os.environ.setdefault("RAY_LD_PRELOAD_ON_WORKERS", "1")
    # a local Ray starts one idle worker per CPU for the driver, which no trial can use: Tune's trial
    # actors carry a runtime env, so Ray starts them new workers. Not prestarting leaves the CPU (~0.8 s)
    # to the sweep's own start
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    # a starting raylet connects to its object store, which its own thread is often still opening: Ray's
    # socket client then sleeps its retry interval, a whole second by default, before trying again: 4 of 8
    # bare `ray.init` calls paused 1.00 s there, none of 8 with 50 ms retries (benchmarks/results/
    # ray-init-20261129/); the sweep's start to its first step 10.7 -> 9.6 s in one run of 6 seeds. A value
    # the user set for either is kept, with Ray's default for the other.
    if not CONNECT_RETRY.keys() & os.environ.keys():
        os.environ.update(CONNECT_RETRY)


NODE_POLL_S = 0.05
"""How often a local Ray's start asks whether its raylet has registered (``_prompt_node_wait``)."""
NODE_WAIT_S = 10.0  # as long as one of Ray's GetNode calls waits (raylet_start_wait_time_s), then Ray's


def _node_registered(
    client: Any,
    node_id: Any,
    deadline_s: float = NODE_WAIT_S,
    every_s: float = NODE_POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int | None:
    """Ask ``client`` (Ray's ``GcsClient``) every ``every_s`` until ``node_id`` is among the nodes it knows:
    the number of asks, or None if ``deadline_s`` passed first."""
    end = clock() + deadline_s
    asks = 0
    while True:
        asks += 1
        if node_id in client.get_all_node_info(timeout=1):
            return asks
        if clock() >= end:
            return None
        sleep(every_s)


@contextlib.contextmanager
def _prompt_node_wait(asked: list[int | None]) -> Iterator[None]:
    """While a local Ray starts, ``ray.init`` learns that its raylet has registered sooner.

    ``ray.init`` asks Ray's GCS for the new node through ``GlobalStateAccessor::GetNode``, which sleeps a
    whole second between asks (hard-coded; ``RAY_raylet_start_wait_time_s=0`` only makes ``ray.init`` spin).
    The raylet registers about a second after it starts (once its dashboard agent is up), so the driver went
    on up to a second after that, depending on which side of the second ask the registration fell: in
    bare starts 0.04-1.00 s (benchmarks/results/node-wait-20261129/), 0.04-0.07 s with this wait.

    Here the first of those lookups first asks the GCS every ``NODE_POLL_S`` (``GcsClient.
    get_all_node_info``, ~1 ms each) until the node is there. Ray's own lookup then finds it at once.
    ``asked`` gets the number of asks: None if the node did not show within ``NODE_WAIT_S``, or if Ray's
    private API is not what this was written against (Ray 2.60). Either way Ray's own wait follows,
    unchanged."""
    try:
        from ray._private import services
        from ray._raylet import GcsClient, NodeID  # type: ignore[attr-defined]  # (not in its stub)

        original = services.get_node
    except (ImportError, AttributeError):
        original = None
    if original is None:  # (outside the handler: a failing ray.init's traceback is not chained to it)
        yield
        return

    def get_node(gcs_address: str, node_id: str) -> Any:
        if not asked:
            try:
                asked.append(_node_registered(GcsClient(address=gcs_address), NodeID.from_hex(node_id)))
            except Exception:
                log.debug("asking for the new node failed; Ray's own wait instead", exc_info=True)
                asked.append(None)
        return original(gcs_address, node_id)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


@contextlib.contextmanager
def _without_log_monitor() -> Iterator[None]:
    """A local Ray that ``ray.init`` starts meanwhile runs no log monitor.

    Ray's log monitor tails every worker's log file and publishes new lines for drivers to print
    (``log_to_driver``); the sweep's driver prints none (``log_to_driver=False``: the workers' output stays
    in their log files, shown in the run dir), and nothing else subscribes. It took ~0.6 CPU-s beside
    Ray's start on the way to the first step, then polled the logs all sweep long (~0.55 CPU-s a minute);
    the start's wall time moved within its spread (benchmarks/results/start-20261129-235932/). ``ray.init``
    has no parameter for it (``ray start --include-log-monitor`` has): its ``RayParams`` get
    ``include_log_monitor=False`` unless given a value. Where ``RayParams`` takes no such parameter (not
    the Ray this was written against, 2.60), nothing changes."""
    try:
        from ray._private import parameter

        original = parameter.RayParams.__init__
        known = "include_log_monitor" in inspect.signature(original).parameters
    except (ImportError, AttributeError):
        known = False
    if not known:
        yield
        return

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("include_log_monitor", False)
        original(self, *args, **kwargs)

    try:
        parameter.RayParams.__init__ = init  # type: ignore[method-assign]
        yield
    finally:
        parameter.RayParams.__init__ = original  # type: ignore[method-assign]


class RaySession:
    """A Ray this sweep connected to (or started): ``start_ray`` returns it, ``close`` ends it.

    A Ray that is already running in this process (a notebook, a test) is used as it is and left
    running; one this session started is shut down, and its temp files leave /tmp."""

    def __init__(self, dashboard: str = "", temp_dir: Path | None = None, owned: bool = False) -> None:
        self.dashboard = dashboard  # the dashboard's URL, or ""
        self.temp_dir = temp_dir  # Ray's session files, when this session started Ray
        self.owned = owned
        self.run_dir: Path | None = None
        self.node_asks: int | None = None  # a local start's asks for its raylet (``_prompt_node_wait``)

    def attach(self, run_dir: Path) -> None:
        """Show Ray's files in the run dir (``ray``, a link while Ray runs); its logs stay there at close.

        A link left by a sweep that was killed (resume) points to that sweep's temp dir: its Ray logs join
        the run dir's too, and the temp dir goes (unless the sweep that made it still runs)."""
        self.run_dir = run_dir.resolve()
        link = self.run_dir / RAY_DIR
        if link.is_symlink() and Path(os.readlink(link)) != self.temp_dir:
            left, owner = Path(os.readlink(link)), _stand_in_owner(Path(os.readlink(link)))
            if _alive(owner):
                return  # that sweep still runs: its Ray files stay where they are
            link.unlink()
            if owner is not None and left.is_dir():
                _keep_logs(left, self.run_dir)
        if self.temp_dir is not None and not link.exists():  # (a run dir of an older version has a real one)
            link.symlink_to(self.temp_dir, target_is_directory=True)

    def close(self) -> None:
        if self.owned:
            ray.shutdown()  # also a node whose start was cut short (ray.is_initialized() is False then)
        if self.temp_dir is not None:
            _keep_logs(self.temp_dir, self.run_dir)
            self.temp_dir = None


STAND_IN = "fsweep-ray-"  # + the driver's PID: Ray's temp dirs under /tmp


def _stand_in_owner(path: Path) -> int | None:
    """The PID of the sweep whose Ray temp dir ``path`` is; None if it is not one."""
    if path.parent != Path(tempfile.gettempdir()) or not path.name.startswith(STAND_IN):
        return None
    pid = path.name.removeprefix(STAND_IN).split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int | None) -> bool:
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def start_ray(address: str | None, dashboard: bool) -> RaySession:
    """Start a local Ray (or connect to ``address``), its session files in a short temp dir (Ray puts unix
    sockets ~62 characters below it; a socket path may not exceed 107 bytes)."""
    _set_env()
    if ray.is_initialized():
        return RaySession()
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    # "Token authentication is enabled for this Ray cluster": the sweep says so where it shows the
    # dashboard; the line would precede a data check's one-line error, which arrives as Ray starts
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    temp_dir: Path | None = None
    asked: list[int | None] = []
    try:
        if address in (None, "local"):
            # the dashboard comes with ray[default]; without it Ray runs headless
            has_dashboard = dashboard and importlib.util.find_spec("aiohttp") is not None
            temp_dir = Path(tempfile.mkdtemp(prefix=f"{STAND_IN}{os.getpid()}-"))
            with _prompt_node_wait(asked), _without_log_monitor():
                info = ray.init(
                    address="local",
                    include_dashboard=has_dashboard,
                    dashboard_host="127.0.0.1",
                    _temp_dir=str(temp_dir),
                    runtime_env={"worker_process_setup_hook": WARM_HOOK},
                    **kwargs,
                )
        else:  # a cluster's (or a job's) own runtime env stays as it is
            info = ray.init(address=address, **kwargs)
    except BaseException:
        RaySession(temp_dir=temp_dir, owned=True).close()
        raise
    url = getattr(info, "dashboard_url", "") or ""
    session = RaySession(f"http://{url}" if url and not url.startswith("http") else url, temp_dir, owned=True)
    session.node_asks = asked[0] if asked else None
    return session


@contextlib.contextmanager
def ray_session(address: str | None, run_dir: Path, dashboard: bool) -> Iterator[RaySession]:
    """``start_ray`` as a context: Ray's files shown in ``run_dir``; yields the session."""
    session = start_ray(address, dashboard)
    try:
        session.attach(run_dir)
        yield session
    finally:
        session.close()


def auth_token() -> str | None:
    """The token of Ray's token authentication, where Ray looks for it: ``RAY_AUTH_TOKEN``, the file
    ``RAY_AUTH_TOKEN_PATH`` names, or ``~/.ray/auth_token`` (which a local Ray writes). Read when asked;
    never stored by the sweep."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


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
    objective = spec.objective.metric
    judged, judged_direction = spec.pruner.judged(objective, spec.objective.direction)
    scheduler: TrialScheduler
    if isinstance(spec.pruner, AshaPruner):
        scheduler = RecordingASHA(
            bridge,
            objective,
            "min" if judged_direction == "minimize" else "max",
            max_last_step,
            spec.pruner.min_resource,
            spec.pruner.reduction_factor,
            judged=judged,
        )
    else:
        scheduler = OptunaPruningScheduler(bridge, objective, judged)
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
            search_alg=OptunaSearcher(bridge, "min" if spec.objective.direction == "minimize" else "max", last_step_of),
            scheduler=scheduler,
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
                _EventCallback(observer, spec.budget.trial_timeout_s),
                CSVLoggerCallback(),  # each trial's progress.csv and result.json, as Tune writes them by default
                JsonLoggerCallback(),
            ],
            verbose=0,
            # only transient failures reach Ray: the trainable reports the others as its outcome
            failure_config=tune.FailureConfig(max_failures=spec.budget.max_retries),
        ),
    )
    tuner.fit()
