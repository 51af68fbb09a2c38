"""``run_sweep``: check, start, run the search's trials and then the verdict's confirmations on Ray,
close the record, and judge (``resume_sweep``: the same for an interrupted sweep's run dir)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep import credentials
from sweep.observer import Echo, LiveView, ModelFiles, Progress, SweepObserver, TrialBook, TrialRecord
from sweep.run.lock import RunDirLock
from sweep.run.plan import last_step_in_driver
from sweep.run.preflight import PendingPlan, preflight_apart
from sweep.run.record import adopt_parent_run, close_record, has_state, read_state, require_state, tracking_uri_of
from sweep.run.startup import collector_paused_for_start, start
from sweep.run_dir import MODELS_DIR, RAY_FILE, SPEC_FILE, write_atomic
from sweep.spec import SweepSpec, load_spec
from sweep.status import TrialStatus


@dataclass
class SweepResult:
    run_dir: Path
    tracking_uri: str
    experiment: str
    parent_run_id: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    wall_s: float
    interrupted: bool
    counts: dict[str, int]
    time_split: dict[str, float] = field(default_factory=dict)
    report: Any = None  # sweep.verdict.Report, when execution.verdict is on
    stop_reason: str = ""  # why fewer trials than the budget ran ("" when the budget was used)
    test_metrics: dict[str, float] = field(default_factory=dict)  # the chosen model on the held-out test part
    compare_path: str = ""  # the MLflow UI page comparing the trials (after http://HOST:PORT)
    search_s: float = 0.0  # start -> the last trial ended (wall_s also counts closing the record, the test)


def run_sweep(spec: SweepSpec, *, resume_dir: Path | None = None, echo: Echo = print) -> SweepResult:
    """The whole sweep. Spec and data are checked before any trial starts (SpecError); Ray starts meanwhile.

    The run dir is this driver's alone while the sweep runs (``RunDirLock``): a resumed one is locked
    first (SpecError while another sweep drives it), a new one as soon as it exists."""
    with contextlib.ExitStack() as held:
        if resume_dir is not None:
            held.enter_context(RunDirLock(resume_dir))
        return _run_held(spec, resume_dir, echo, held)


def resume_sweep(run_dir: Path, overrides: Sequence[str] = (), echo: Echo = print) -> tuple[SweepSpec, SweepResult]:
    """`sweep resume`: the run dir is locked before anything reads or writes it (another driver's sweep:
    SpecError, nothing changed), its state and spec read (one line when unreadable, before Ray starts),
    and the sweep run on. Returns the spec it ran (with ``overrides``) and the result."""
    if not (run_dir / SPEC_FILE).is_file():
        require_state(run_dir)  # no sweep's run dir: one line, and no lock file left in it
    with contextlib.ExitStack() as held:
        held.enter_context(RunDirLock(run_dir))
        spec = load_spec(run_dir / SPEC_FILE, overrides)
        if not has_state(run_dir):  # a driver killed as it created the record: its parent run is found
            adopt_parent_run(spec, run_dir)
        read_state(run_dir)
        return spec, _run_held(spec, run_dir, echo, held)


def _run_held(spec: SweepSpec, resume_dir: Path | None, echo: Echo, held: contextlib.ExitStack) -> SweepResult:
    """``run_sweep`` with the run dir's lock in ``held`` (a new run dir's goes there when it is made)."""
    with collector_paused_for_start() as start_over:
        planned = preflight_apart(spec, keep_split=True)
        try:
            return _run_sweep(spec, planned, resume_dir, echo, start_over, held)
        finally:
            planned.discard()  # the split file, where no run dir took it


def _run_sweep(
    spec: SweepSpec,
    planned: PendingPlan,
    resume_dir: Path | None,
    echo: Echo,
    start_over: Callable[[], None],
    held: contextlib.ExitStack,
) -> SweepResult:
    from sweep.ray import tuner as ray_tuner  # (with Ray) imported while the child checks
    from sweep.run import confirm_phase  # imported while the child checks

    if planned.done():
        planned.result()  # checked in this process already: a SpecError before anything starts
    started = time.time()
    # URL passwords are masked in everything stored or shown (sweep.credentials); checked before anything is written
    credentials.resolve(tracking_uri_of(spec), "tracking.uri")
    if spec.execution.storage:
        credentials.resolve(spec.execution.storage, "execution.storage")
    if resume_dir is None:  # an unreadable earlier sweep to start from: one line now, before Ray starts
        from sweep.warm_start import previous_sweep

        previous_sweep(spec)
    session, opened, interrupted = start(spec, planned, resume_dir, held)
    start_over()
    plan, run_dir, recorder, bridge = opened.plan, opened.run_dir, opened.recorder, opened.bridge
    models = ModelFiles(run_dir / MODELS_DIR if spec.execution.save_best_model else None)
    book = TrialBook(spec.objective.metric, spec.objective.direction)
    try:
        priors = bridge.prior_trials()
        for prior in priors:  # resume: what the interrupted run already did
            book.add_prior(
                TrialRecord(
                    prior.ray_id,
                    prior.number,
                    prior.params,
                    status=prior.status,
                    step=prior.step,
                    value=prior.value,
                    ended=time.time(),
                )
            )
            recorder.settle_trial(prior.ray_id, prior.number, prior.params, prior.status, prior.step)
        models.keep_only(book.best)  # a killed run's model files: the best's stay, the rest go
        # the budget's last trials are the verdict's confirmations (sweep.confirm_phase), after the search
        confirmations = {p.ray_id for p in priors if p.confirmation}
        used = [r for r in book.trials.values() if r.status.counts_against_budget]
        num_trials, num_confirm = split_budget(
            spec.budget.num_trials,
            spec.verdict.num_confirm(spec.budget.num_trials) if spec.execution.verdict else 0,
            sum(1 for r in used if r.ray_id not in confirmations),
            sum(1 for r in used if r.ray_id in confirmations),
        )
        progress = _progress(spec, echo, book)
        observer = SweepObserver(book, bridge, recorder, models, progress)
        then = f" + {num_confirm} for confirmations" if num_confirm else ""
        echo(f"sweep '{spec.name}': {num_trials} trials{then}, run dir {run_dir}")
        echo(
            f"MLflow: {credentials.mask(recorder.uri)} (experiment '{recorder.experiment}'); "
            f"Optuna: {credentials.mask(opened.stored_storage)}"
        )
        if opened.warm_start:
            echo(opened.warm_start)
    except BaseException as exc:  # (a resume's record, a closed stdout): Ray ends, the record too
        session.close()
        recorder.close(isinstance(exc, KeyboardInterrupt), not isinstance(exc, KeyboardInterrupt))
        raise
    crashed = False
    try:
        try:
            if session.dashboard:
                write_atomic(run_dir / RAY_FILE, json.dumps({"dashboard": session.dashboard}))
                echo(f"Ray dashboard: {session.dashboard}  (token auth: `make dashboard` prints the token)")
            tuner_args: dict[str, Any] = {
                "max_last_step": plan.max_last_step,
                "last_step_of": last_step_in_driver(spec, plan),
                "run_dir": run_dir,
                "models_dir": models.models_dir,
                "split_file": opened.split_file,
            }
            budget_s = spec.budget.time_budget_s
            if num_trials > 0 and not interrupted:  # (Ctrl-C as the sweep started)
                with progress if isinstance(progress, LiveView) else contextlib.nullcontext():
                    ray_tuner.run_tuner(
                        spec,
                        bridge,
                        observer,
                        num_trials=num_trials,
                        # the confirmations' share of the time is kept for them, as their share of trials
                        time_budget_s=search_time_s(budget_s, num_trials, num_confirm),
                        **tuner_args,
                    )
            if not interrupted:  # out of time: ended before the confirmations read the record
                observer.end_running(TrialStatus.STOPPED)
            if num_confirm > 0 and not interrupted:
                left = None if budget_s is None else budget_s - (time.time() - started)
                confirm_phase.run(spec, opened, book.best, observer, progress, num_confirm, left, tuner_args, echo)
        finally:
            session.close()  # before the record closes: the held-out test runs in this process
        # Ray ended them without a result: the time budget ran out
        observer.end_running(TrialStatus.KILLED if interrupted else TrialStatus.STOPPED)
    except KeyboardInterrupt:
        interrupted = True
        observer.end_running(TrialStatus.KILLED)
    except BaseException:
        crashed = True  # our bug or Ray's: the record says FAILED, the traceback goes to the user
        raise
    finally:
        searched = time.time() - started
        stop_reason = "" if interrupted or crashed else _stop_reason(spec, book, bridge.exhausted())
        test_metrics = close_record(spec, book, models, recorder, run_dir, searched, interrupted, crashed, stop_reason)
        wall = time.time() - started
        if interrupted:
            echo(f"interrupted: runs ended as KILLED. Resume with: sweep resume {run_dir}")
    assert recorder.parent_id is not None
    report = None
    if spec.execution.verdict and not interrupted:
        from sweep.verdict import make_report

        try:
            # (locked: the run dir is this driver's; the summary prints the verdict, after the table)
            report = make_report(run_dir, echo=lambda line: None, locked=True)
        except Exception as exc:  # the sweep is recorded either way; the verdict can be asked for again
            logging.getLogger(__name__).debug("verdict failed", exc_info=True)
            echo(
                f"error: the verdict could not be written ({type(exc).__name__}: {credentials.mask(str(exc))}); "
                f"retry: sweep report {run_dir}"
            )
    return SweepResult(
        run_dir,
        recorder.uri,
        recorder.experiment,
        recorder.parent_id,
        list(book.trials.values()),
        book.best,
        wall,
        interrupted,
        book.counts(),
        book.time_split(),
        report,
        stop_reason,
        test_metrics,
        getattr(recorder, "compare_path", ""),
        searched,
    )


def split_budget(num_trials: int, num_confirm: int, used_search: int, used_confirm: int) -> tuple[int, int]:
    """(search trials, then confirmation slots) still to run: the budget's last ``num_confirm`` trials
    are the verdict's confirmations. On resume, ``used_*`` ended already; a slot no confirmation needed
    searched on and counts as a search trial, so the search never runs past its share."""
    left = num_trials - used_search - used_confirm
    search = min(left, max(0, num_trials - num_confirm - used_search))
    return search, max(0, left - search)


def search_time_s(budget_s: float | None, num_search: int, num_confirm: int) -> float | None:
    """What the search may spend of the sweep's time budget: all of it without confirmations, else the
    search's share of the trials, so the confirmations keep theirs (they get what is left)."""
    if budget_s is None or not num_confirm:
        return budget_s
    return budget_s * num_search / (num_search + num_confirm)


def _progress(spec: SweepSpec, echo: Echo, book: TrialBook) -> Progress:
    """A live view when the sweep prints to a terminal; plain lines otherwise (logs, CI, callers' echo)."""
    if echo is print and sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        return LiveView(
            book, spec.objective.metric, spec.budget.num_trials, spec.budget.max_retries, spec.budget.time_budget_s
        )
    return Progress(echo, spec.objective.metric, spec.budget.num_trials, spec.budget.max_retries)


def _stop_reason(spec: SweepSpec, book: TrialBook, exhausted: bool) -> str:
    missing = spec.budget.num_trials - book.num_used()
    if missing <= 0:
        return ""
    if exhausted:
        return f"the space is exhausted: every configuration was tried, {missing} trials of the budget were not needed"
    if spec.budget.time_budget_s is not None:
        return (
            f"the time budget (budget.time_budget_s={spec.budget.time_budget_s:g}) ran out: "
            f"{missing} of {spec.budget.num_trials} trials never started"
        )
    return f"{missing} of {spec.budget.num_trials} trials never started"
