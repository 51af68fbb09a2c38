"""The sweep's start: Ray starts in this thread while the data is checked (a child process) and a helper
thread opens the record and the study."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep import credentials
from sweep.errors import SpecError
from sweep.interfaces import Recorder
from sweep.run.lock import RunDirLock
from sweep.run.plan import SweepPlan
from sweep.run.preflight import PendingPlan
from sweep.run.record import open_record, stored_storage_of, tracking_uri_of, write_spec
from sweep.run_dir import new_run_dir
from sweep.spec import SweepSpec


@dataclass
class Opened:
    """What the sweep opens before its trials: the plan, the run dir, the record and the study."""

    plan: SweepPlan
    run_dir: Path
    stored_storage: str  # as stored and shown (a password masked or referenced)
    recorder: Recorder
    bridge: Any  # optuna_study.StudyBridge
    split_file: Path | None = None  # the data's split in the run dir, for the trials (``SPLIT_FILE``)
    warm_start: str = ""  # what a warm start copied into the study (a line to print), "" without one


def new_locked_run_dir(spec: SweepSpec, held: contextlib.ExitStack) -> Path:
    """A fresh run dir, locked for this driver at once (``held`` frees it when the sweep ends): nothing
    else may drive it, not even a `sweep resume` started while this sweep writes its first files."""
    run_dir = new_run_dir(spec.execution.runs_dir, spec.name)
    held.enter_context(RunDirLock(run_dir))
    return run_dir


def open_sweep(
    spec: SweepSpec,
    planned: PendingPlan,
    run_dir: Path | None,
    resume: bool,
    held: contextlib.ExitStack | None = None,
) -> Opened:
    """Wait for the plan, then make the run dir (unless given; locked into ``held``) and open the record
    and the study. Runs beside Ray's start (a helper thread): a SpecError here means nothing was written."""
    from sweep import optuna_study, tracking, warm_start

    tracking.load_store(credentials.resolve(tracking_uri_of(spec), "tracking.uri"))  # while the child checks
    plan = planned.result()
    previous = None if resume else warm_start.previous_sweep(spec)  # (a resumed study has its copies)
    if run_dir is None:
        assert held is not None, "a new run dir is locked for the sweep's whole life"
        run_dir = new_locked_run_dir(spec, held)
    stored_storage = stored_storage_of(spec, run_dir)
    earlier = warm_start.read(previous, spec, stored_storage) if previous is not None else []
    split_file = planned.keep_split(run_dir)
    storage = credentials.resolve(stored_storage, "execution.storage")
    # on resume too: overrides given to `sweep resume` are what the rest of the sweep (and its verdict) use
    write_spec(run_dir, spec)
    recorder = open_record(spec, run_dir, resume, stored_storage, plan.fingerprints, previous)
    warmed = ""
    try:
        # the study may be shared with other sweeps (team mode): this sweep's trials are those it asked
        shared = optuna_study.is_shared(spec.execution.storage)
        owner = recorder.parent_id
        study = optuna_study.open_study(spec, storage, spec.name, plan.max_last_step, owner=owner if shared else None)
        if previous is not None:  # before the judge and the bridge: both read the study's ended trials
            warmed = warm_start.warm(study, previous, spec, stored_storage, earlier)
        judge = optuna_study.pruning_judge(spec, plan.max_last_step)
        bridge = optuna_study.StudyBridge(study, spec.space, owner=owner, shared=shared, judge=judge)
    except BaseException as exc:  # the study cannot open: the record that did ends (KILLED on Ctrl-C)
        recorder.close(isinstance(exc, KeyboardInterrupt), not isinstance(exc, KeyboardInterrupt))
        raise
    return Opened(plan, run_dir, stored_storage, recorder, bridge, split_file, warmed)


def start(
    spec: SweepSpec, planned: PendingPlan, resume_dir: Path | None, held: contextlib.ExitStack
) -> tuple[Any, Opened, bool]:
    """Start Ray (this thread) while the preflight child checks the data and a helper thread then opens
    the record and the study: the first trial starts seconds sooner than one after the other. A new run
    dir's lock goes into ``held`` (the caller's, for the sweep's whole life; a resumed one's it holds).

    Returns the Ray session, what was opened, and whether Ctrl-C came meanwhile (then Ray is gone again,
    the session a stand-in, and the sweep ends KILLED and resumable). Any other failure of either ends the
    other: Ray is shut down, an opened record closed FAILED; a data mistake (SpecError) is what is raised."""
    import threading

    from sweep.ray import session as ray_session

    # with the plan known already (checked here), the run dir is made before Ray starts
    run_dir = resume_dir or (new_locked_run_dir(spec, held) if planned.done() else None)
    outcome: dict[str, Any] = {}

    def open_in_background() -> None:
        try:
            outcome["opened"] = open_sweep(spec, planned, run_dir, resume_dir is not None, held)
        except BaseException as exc:  # re-raised in the sweep's thread
            outcome["error"] = exc

    helper = threading.Thread(target=open_in_background, name="sweep-open", daemon=True)
    helper.start()

    def settle(exc: BaseException) -> tuple[Any, Opened, bool]:
        """Ray could not start or Ctrl-C came: wait for the helper; on Ctrl-C an opened sweep ends KILLED
        (returned), else its record ends FAILED and a data mistake is raised before Ray's failure."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        if interrupted:
            planned.cancel()  # a data check the user no longer waits for
        helper.join()
        if interrupted and "opened" in outcome:
            return ray_session.RaySession(), outcome["opened"], True
        if "opened" in outcome:
            outcome["opened"].recorder.close(False, True)
        if isinstance(outcome.get("error"), SpecError) and not interrupted:
            raise outcome["error"] from None
        raise exc

    try:
        session = ray_session.start_ray(spec.execution.address, spec.execution.dashboard)
    except BaseException as exc:
        return settle(exc)
    try:
        helper.join()
    except BaseException as exc:  # Ctrl-C while the record opens
        session.close()
        return settle(exc)
    if "error" in outcome:  # a SpecError (nothing written), or the record could not be opened
        session.close()
        raise outcome["error"]
    opened: Opened = outcome["opened"]
    session.attach(opened.run_dir)
    return session, opened, False


@contextlib.contextmanager
def collector_paused_for_start() -> Iterator[Callable[[], None]]:
    """Python's cyclic collector stays off while the sweep starts: the imports, MLflow's schema and Ray's
    start make many long-lived objects and would set it off again and again, finding little. The
    ``started`` it yields, called as the trials are about to start, freezes what exists then (so the
    collector does not walk the start's objects on the way to the first trial) and turns the collector
    on; at the sweep's end the frozen objects are the collector's again. A caller that paused or froze
    it already keeps it as it is. (The data check's child imports without it too.)"""
    if not gc.isenabled() or gc.get_freeze_count():
        yield lambda: None
        return
    froze = False

    def started() -> None:
        nonlocal froze
        if not froze:
            froze = True  # (first: a Ctrl-C between the two still leaves nothing frozen at the end)
            gc.freeze()
        gc.enable()

    try:
        gc.disable()
        yield started
    finally:
        gc.enable()
        if froze:
            gc.unfreeze()
