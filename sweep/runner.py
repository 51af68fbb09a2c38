"""`sweep run`: check everything, open the study and the record, run the trials on Ray, summarize."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweep import secrets
from sweep.interfaces import Recorder
from sweep.observer import Echo, LiveView, ModelFiles, Progress, SweepObserver, TrialBook, TrialRecord
from sweep.run_dir import (
    BEST_DIR,
    BEST_MODEL,
    MODELS_DIR,
    OPTUNA_FILE,
    RAY_FILE,
    SPEC_FILE,
    SPLIT_FILE,
    STATE_FILE,
    TEST_FILE,
    new_run_dir,
)
from sweep.space import candidate_values
from sweep.spec import SpecError, SweepSpec
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


@dataclass(frozen=True)
class SweepPlan:
    fingerprints: dict[str, str]  # of the template's data and split
    max_last_step: int  # the largest step any trial of the space reports (ASHA's max_t, Hyperband's max)
    data_lines: list[str] = field(default_factory=list)  # rows per part and class balance, for `sweep validate`
    num_train: int = 0  # training rows of the template's (first) fold


STEP_PATHS = (
    "optim.max_steps",
    "optim.num_epochs",
    "optim.batch_size",
    "optim.grad_accum_steps",
    "data.max_rows",
    "split.val_fraction",
    "split.test_fraction",
    "split.num_folds",
)
"""Trial fields that change how many steps a trial runs (with the data size)."""


def preflight(spec: SweepSpec, split_file: Path | None = None) -> SweepPlan:
    """Load the data and check the model against every value the space can give, before any trial
    starts: a data mistake is exit code 2, not N failed trials. With ``split_file``, the split trials
    start from is written there (``_save_split``), for them to load (``trainers.data.load_splits``)."""
    from trainers.config import ConfigError
    from trainers.plan import plan_trial

    try:
        plan = plan_trial(spec.trial_config({}))
    except ConfigError as exc:  # the template itself fails: every space value would repeat it
        raise SpecError([f"trial.{line}" for line in exc.problems]) from None
    if split_file is not None:  # now, while the split just made is at hand (a data mistake below: discarded)
        _save_split(spec, split_file)
    problems: list[str] = []
    for path, p in spec.space.items():
        if not path.startswith(("model.", "data.", "split.")):
            continue
        for value in candidate_values(p, spec.space):
            try:
                plan_trial(spec.trial_config({path: value}))
            except ConfigError as exc:
                problems.append(f"space.{path}: value {value!r} fails: {exc.problems[0]}")
    if problems:
        raise SpecError(problems)
    max_last_step = _max_last_step(spec, plan.last_step)
    problems = spec.pruner.problems(spec.trial_config({}), max_last_step)
    if problems:
        raise SpecError(problems)
    return SweepPlan(plan.fingerprints, max_last_step, plan.describe(), plan.num_train)


def _save_split(spec: SweepSpec, split_file: Path) -> None:
    """The split every trial starts from (the template with the space's fixed values, as trials get
    them) to ``split_file``; where that fails (a full disk, say), each trial splits the data itself."""
    from sweep.evidence import fixed_params
    from trainers.plan import save_split

    try:
        save_split(spec.trial_config(fixed_params(spec)), split_file)
    except Exception:  # best effort: the trials' own split is the same
        logging.getLogger(__name__).debug("split not saved", exc_info=True)


_PLAN_MARK = "sweep-preflight-plan: "


class PendingPlan:
    """``preflight``'s answer, here already or on its way from a child process (``preflight_apart``)."""

    def __init__(
        self, plan: SweepPlan | None = None, problem: SpecError | None = None, split_file: Path | None = None
    ) -> None:
        self._plan, self._problem = plan, problem
        self._wait: Callable[[], SweepPlan] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self.split_file = split_file  # where the check writes the data's split (a temp file)

    def done(self) -> bool:
        """True when the answer is known (checked in this process)."""
        return self._wait is None

    def result(self) -> SweepPlan:
        """The plan; raises SpecError as preflight does (waits for the child the first time)."""
        if self._wait is not None:
            wait, self._wait = self._wait, None
            try:
                self._plan = wait()
            except SpecError as exc:
                self._problem = exc
        if self._problem is not None:
            raise self._problem
        assert self._plan is not None
        return self._plan

    def cancel(self) -> None:
        """Stop the child (Ctrl-C while the sweep starts)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def keep_split(self, run_dir: Path) -> Path | None:
        """Move the split the check wrote into the run dir (``SPLIT_FILE``); its path there, or None if
        there is none (the trials then split the data themselves). On resume, the interrupted run's split
        stays where the check wrote none."""
        kept = run_dir / SPLIT_FILE
        part = run_dir / f".{SPLIT_FILE}.part"
        try:
            if self.split_file is not None and self.split_file.is_file():
                shutil.copyfile(self.split_file, part)  # (the temp dir may be another file system)
                part.replace(kept)  # whole or not at all: a resumed run's split stays if the copy fails
                self.split_file.unlink()
            return kept if kept.is_file() else None
        except OSError:
            logging.getLogger(__name__).debug("split not kept", exc_info=True)
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            return None

    def discard(self) -> None:
        """Remove what of the split file is left in the temp dir (a data mistake, Ctrl-C, a failed start),
        after a child still checking has stopped (it would write the file after)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self.split_file is not None:
            for left in (self.split_file, self.split_file.with_name(f".{self.split_file.name}.part")):
                with contextlib.suppress(OSError):
                    left.unlink(missing_ok=True)


def preflight_apart(spec: SweepSpec, apart: bool | None = None, keep_split: bool = False) -> PendingPlan:
    """Start ``preflight`` in a child process and return at once; ``result()`` waits for its plan (raising
    SpecError as preflight does). The driver meanwhile imports Ray, Optuna and MLflow and starts Ray, and
    never imports torch or transformers for the sweep (the child does, and exits): ~350 MB less held while
    trials run.

    ``apart=None``: in a child unless this process has torch already (a notebook, tests), where checking
    here costs no memory and saves the child's imports. ``keep_split``: the check also writes the data's
    split to a temp file (``PendingPlan.split_file``), which the caller moves (``keep_split``) or removes
    (``discard``)."""
    split_file = None
    if keep_split:
        with contextlib.suppress(OSError):  # no usable temp dir: the trials split the data themselves
            split_file = Path(tempfile.gettempdir()) / f"fsweep-split-{os.getpid()}-{os.urandom(4).hex()}.npz"
    if apart is False or (apart is None and "torch" in sys.modules):
        try:
            return PendingPlan(preflight(spec, split_file), split_file=split_file)
        except SpecError as exc:
            return PendingPlan(problem=exc, split_file=split_file)
    proc = subprocess.Popen(
        [sys.executable, "-c", _PREFLIGHT_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    # a pipe: URL passwords never touch argv or disk
    asked = {"spec": spec.model_dump(mode="json"), "split_file": str(split_file) if split_file else None}
    proc.stdin.write(json.dumps(asked))
    proc.stdin.close()
    proc.stdin = None  # sent: communicate() below only reads (both pipes at once, so neither fills up)

    def plan() -> SweepPlan:
        try:
            out, err = proc.communicate()
        except BaseException:  # Ctrl-C: the child got it too; don't leave it behind
            proc.kill()
            raise
        found = [ln.removeprefix(_PLAN_MARK) for ln in out.splitlines() if ln.startswith(_PLAN_MARK)]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"preflight failed (exit {proc.returncode}):\n{secrets.mask(err[-4000:])}")
        answer = json.loads(found[-1])
        if "problems" in answer:
            raise SpecError(answer["problems"])
        return SweepPlan(**answer["plan"])

    pending = PendingPlan(split_file=split_file)
    pending._wait, pending._proc = plan, proc
    return pending


_PREFLIGHT_CHILD = "import gc; gc.disable(); from sweep.runner import _preflight_child; _preflight_child()"
"""The child's program (the benchmark's variants change it)."""


def _preflight_child() -> None:
    """``preflight_apart``'s child: the spec and where to write the split (JSON) on stdin, its plan (or its
    problems) on stdout. It imports with the cyclic collector off (``_PREFLIGHT_CHILD``), then freezes
    those objects and turns it on for reading the data."""
    import dataclasses

    import trainers.data  # (pandas, numpy)
    import trainers.plan  # noqa: F401

    gc.freeze()
    gc.enable()
    asked = json.loads(sys.stdin.read())
    spec = SweepSpec.model_validate(asked["spec"])
    try:
        split_file = Path(asked["split_file"]) if asked["split_file"] else None
        answer: dict[str, Any] = {"plan": dataclasses.asdict(preflight(spec, split_file))}
    except SpecError as exc:
        answer = {"problems": exc.problems}
    print(_PLAN_MARK + json.dumps(answer), flush=True)


def _last_step_in_driver(spec: SweepSpec, plan: SweepPlan) -> Callable[[Mapping[str, Any]], int | None]:
    """``last_step_of`` without reading the data or the model again (both checked by preflight for every
    value of the space): torch stays out of the driver. A space over data or split reads them again."""
    from trainers.config import ConfigError
    from trainers.plan import last_step

    if any(path.startswith(("data.", "split.")) for path in spec.space):
        return lambda params: last_step_of(spec, params)

    def of(params: Mapping[str, Any]) -> int | None:
        try:
            return last_step(spec.trial_config(params), plan.num_train)
        except ConfigError:
            return None

    return of


def _max_last_step(spec: SweepSpec, template_last: int) -> int:
    """The largest last step over every combination of the space's step-changing values (ASHA's max_t)."""
    import itertools

    paths = [path for path in spec.space if path in STEP_PATHS]
    choices = [candidate_values(spec.space[path], spec.space) for path in paths]
    largest = template_last
    for combo in itertools.islice(itertools.product(*choices), 512):
        last = last_step_of(spec, dict(zip(paths, combo, strict=True)))
        if last is not None:
            largest = max(largest, last)
    return largest


def last_step_of(spec: SweepSpec, params: Mapping[str, Any]) -> int | None:
    """The step of one trial's final report; None when the trial will reject its parameters."""
    from trainers.config import ConfigError
    from trainers.plan import plan_trial

    try:
        return plan_trial(spec.trial_config(params)).last_step
    except ConfigError:
        return None


def _code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            return sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import version

    return f"finetune-sweep {version('finetune-sweep')}"


@dataclass
class _Opened:
    """What the sweep opens before its trials: the plan, the run dir, the record and the study."""

    plan: SweepPlan
    run_dir: Path
    stored_storage: str  # as stored and shown (a password masked or referenced)
    recorder: Recorder
    bridge: Any  # optuna_study.StudyBridge
    split_file: Path | None = None  # the data's split in the run dir, for the trials (``SPLIT_FILE``)
    warm_start: str = ""  # what a warm start copied into the study (a line to print), "" without one


def _open(spec: SweepSpec, planned: PendingPlan, run_dir: Path | None, resume: bool) -> _Opened:
    """Wait for the plan, then make the run dir (unless given) and open the record and the study. Runs
    beside Ray's start (a helper thread): a SpecError here means nothing was written."""
    from sweep import optuna_study, tracking, warm_start

    tracking.load_store(secrets.resolve(_tracking_uri(spec), "tracking.uri"))  # while the child checks
    plan = planned.result()
    previous = None if resume else warm_start.previous_sweep(spec)  # (a resumed study has its copies)
    run_dir = run_dir or new_run_dir(spec.execution.runs_dir, spec.name)
    stored_storage = spec.execution.storage or f"sqlite:///{run_dir.resolve()}/{OPTUNA_FILE}"
    earlier = warm_start.read(previous, spec, stored_storage) if previous is not None else []
    split_file = planned.keep_split(run_dir)
    storage = secrets.resolve(stored_storage, "execution.storage")
    # on resume too: overrides given to `sweep resume` are what the rest of the sweep (and its verdict) use
    (run_dir / SPEC_FILE).write_text(yaml.safe_dump(spec.stored(), sort_keys=False))
    recorder = _open_record(spec, run_dir, resume, stored_storage, plan.fingerprints, previous)
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
    return _Opened(plan, run_dir, stored_storage, recorder, bridge, split_file, warmed)


def _start(spec: SweepSpec, planned: PendingPlan, resume_dir: Path | None) -> tuple[Any, _Opened, bool]:
    """Start Ray (this thread) while the preflight child checks the data and a helper thread then opens
    the record and the study: the first trial starts seconds sooner than one after the other.

    Returns the Ray session, what was opened, and whether Ctrl-C came meanwhile (then Ray is gone again,
    the session a stand-in, and the sweep ends KILLED and resumable). Any other failure of either ends the
    other: Ray is shut down, an opened record closed FAILED; a data mistake (SpecError) is what is raised."""
    import threading

    from sweep.ray import session as ray_session

    # with the plan known already (checked here), the run dir is made before Ray starts
    run_dir = resume_dir or (new_run_dir(spec.execution.runs_dir, spec.name) if planned.done() else None)
    outcome: dict[str, Any] = {}

    def open_in_background() -> None:
        try:
            outcome["opened"] = _open(spec, planned, run_dir, resume_dir is not None)
        except BaseException as exc:  # re-raised in the sweep's thread
            outcome["error"] = exc

    helper = threading.Thread(target=open_in_background, name="sweep-open", daemon=True)
    helper.start()

    def settle(exc: BaseException) -> tuple[Any, _Opened, bool]:
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
    opened: _Opened = outcome["opened"]
    session.attach(opened.run_dir)
    return session, opened, False


@contextlib.contextmanager
def collector_paused_for_start() -> Iterator[Callable[[], None]]:
    """Python's cyclic collector stays off while the sweep starts: the imports, MLflow's schema and Ray's
    start made it run ~420 times (~1 CPU-s beside Ray's own start on 2 cores), and it found little. The
    ``started`` it yields, called as the trials are about to start, freezes what exists then (turned on
    unfrozen, it spent ~0.45 s walking the start's objects right then, on the way to the first trial) and
    turns the collector on; at the sweep's end the frozen objects are the collector's again. A caller
    that paused or froze it already keeps it as it is. (The data check's child imports without it, and
    so does each trial worker of a local Ray the sweep starts: ``sweep.ray.worker.warm_worker``.)"""
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


def run_sweep(spec: SweepSpec, *, resume_dir: Path | None = None, echo: Echo = print) -> SweepResult:
    """The whole sweep. Spec and data are checked before any trial starts (SpecError); Ray starts meanwhile."""
    with collector_paused_for_start() as start_over:
        planned = preflight_apart(spec, keep_split=True)
        try:
            return _run_sweep(spec, planned, resume_dir, echo, start_over)
        finally:
            planned.discard()  # the split file, where no run dir took it


def _run_sweep(
    spec: SweepSpec, planned: PendingPlan, resume_dir: Path | None, echo: Echo, start_over: Callable[[], None]
) -> SweepResult:
    from sweep import confirm_phase
    from sweep.ray import tuner as ray_tuner  # (with Ray) imported while the child checks

    if planned.done():
        planned.result()  # checked in this process already: a SpecError before anything starts
    started = time.time()
    # URL passwords are masked in everything stored or shown (sweep.secrets); checked before anything is written
    secrets.resolve(_tracking_uri(spec), "tracking.uri")
    if spec.execution.storage:
        secrets.resolve(spec.execution.storage, "execution.storage")
    if resume_dir is None:  # an unreadable earlier sweep to start from: one line now, before Ray starts
        from sweep.warm_start import previous_sweep

        previous_sweep(spec)
    session, opened, interrupted = _start(spec, planned, resume_dir)
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
            f"MLflow: {secrets.mask(recorder.uri)} (experiment '{recorder.experiment}'); "
            f"Optuna: {secrets.mask(opened.stored_storage)}"
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
                (run_dir / RAY_FILE).write_text(json.dumps({"dashboard": session.dashboard}))
                echo(f"Ray dashboard: {session.dashboard}  (token auth: `make dashboard` prints the token)")
            tuner_args: dict[str, Any] = {
                "max_last_step": plan.max_last_step,
                "last_step_of": _last_step_in_driver(spec, plan),
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
        test_metrics = _close_record(spec, book, models, recorder, run_dir, searched, interrupted, crashed, stop_reason)
        wall = time.time() - started
        if interrupted:
            echo(f"interrupted: runs ended as KILLED. Resume with: sweep resume {run_dir}")
    assert recorder.parent_id is not None
    report = None
    if spec.execution.verdict and not interrupted:
        from sweep.verdict import make_report

        try:
            report = make_report(run_dir, echo=lambda line: None)  # the summary prints it, after the table
        except Exception as exc:  # the sweep is recorded either way; the verdict can be asked for again
            logging.getLogger(__name__).debug("verdict failed", exc_info=True)
            echo(
                f"error: the verdict could not be written ({type(exc).__name__}: {secrets.mask(str(exc))}); "
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


def _tracking_uri(spec: SweepSpec) -> str:
    from sweep.tracking import default_tracking_uri

    return spec.tracking.uri or default_tracking_uri(spec.execution.runs_dir)


def _open_record(
    spec: SweepSpec,
    run_dir: Path,
    resume: bool,
    storage: str,
    fingerprints: dict[str, str],
    previous: Any = None,
) -> Recorder:
    """The sweep's parent run: new, or re-opened from the run dir's state file on resume. ``previous``
    (``warm_start.Previous``): the sweep this one starts from, linked both ways where the store has both."""
    from sweep.tracking import PREVIOUS_DIR_TAG, PREVIOUS_TAG, MlflowRecorder

    state_file = run_dir / STATE_FILE
    uri = _tracking_uri(spec)
    recorder = MlflowRecorder(
        secrets.resolve(uri, "tracking.uri"),
        spec.tracking.experiment or spec.name,
        Path(spec.execution.runs_dir) / "mlartifacts",
    )
    if resume:
        recorder.resume_sweep(json.loads(state_file.read_text())["parent_run_id"])
    else:
        params = {
            "trial": spec.trial_template(),
            "space": {k: v.model_dump(exclude_none=True) for k, v in spec.space.items()},
            **spec.model_dump(include={"objective", "sampler", "pruner", "budget", "resources"}),
        }
        tags = {
            "sweep.code_version": _code_version(),
            "sweep.run_dir": str(run_dir.resolve()),
            "sweep.storage": secrets.mask(storage),
            **{f"{k}.fingerprint": v for k, v in fingerprints.items()},
        }
        if previous is not None:
            tags[PREVIOUS_TAG] = previous.parent_run_id
            tags[PREVIOUS_DIR_TAG] = str(previous.run_dir.resolve())
        recorder.start_sweep(spec.name, params, tags, spec.stored())
        if previous is not None:
            recorder.link_next(previous.parent_run_id)
    state = {
        "parent_run_id": recorder.parent_id,
        "tracking_uri": secrets.mask(uri),
        "experiment": recorder.experiment,
        "storage": secrets.mask(storage),
    }
    state_file.write_text(json.dumps(state, indent=1))
    return recorder


def _close_record(
    spec: SweepSpec,
    book: TrialBook,
    models: ModelFiles,
    recorder: Recorder,
    run_dir: Path,
    wall: float,
    interrupted: bool,
    crashed: bool,
    stop_reason: str = "",
) -> dict[str, float]:
    """Publish the best model, evaluate it (alone) on the held-out test part, write the sweep's summary,
    and leave no run RUNNING. Returns the test metrics."""
    best = book.best
    test: dict[str, float] = {}
    if best is not None and models.models_dir is not None:
        models.publish(spec, best, run_dir, recorder)
        if not interrupted and not crashed:
            test = _held_out(spec, best, run_dir)
            if test:
                recorder.log_trial_metrics(best.ray_id, test)
    summary = {
        "wall_s": wall,
        "num_trials": len(book.trials),
        **{f"num_{k}": v for k, v in book.counts().items()},
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "interrupted": interrupted,
        "num_never_started": max(0, spec.budget.num_trials - book.num_used()),
        "stop_reason": stop_reason,
        **book.time_split(),
        **test,
    }
    end_tags = {
        "sweep.best_trial": str(best.number if best else None),
        "sweep.counts": json.dumps(book.counts()),
        "sweep.interrupted": str(interrupted),
        **({"sweep.stop_reason": stop_reason} if stop_reason else {}),
    }
    if not interrupted and not crashed:
        recorder.finish_sweep(summary, end_tags)
    recorder.close(interrupted, crashed)
    return test


def _held_out(spec: SweepSpec, best: TrialRecord, run_dir: Path) -> dict[str, float]:
    """The chosen model on the test part (the only model that ever sees it); {} without a test part."""
    from trainers.saved import evaluate_held_out

    model_dir = run_dir / BEST_DIR / BEST_MODEL
    cfg = spec.trial_config(best.params)
    if not model_dir.is_dir() or cfg.split.num_folds is not None:
        return {}
    try:
        metrics, rows = evaluate_held_out(cfg, model_dir, run_dir / SPLIT_FILE)
    except Exception:  # the sweep is recorded either way; `sweep evaluate` can do it again
        logging.getLogger(__name__).warning("the held-out evaluation failed", exc_info=True)
        return {}
    if metrics:
        (run_dir / BEST_DIR / TEST_FILE).write_text(json.dumps({"num_rows": rows, **metrics}, indent=1))
    return metrics
