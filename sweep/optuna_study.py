"""The sweep's Optuna study (its sampler and pruner come from ``samplers.py`` / ``pruners.py``) and the
ask/tell bookkeeping between Ray trial ids and Optuna trials."""

from __future__ import annotations

import hashlib
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.optuna_samplers import build_sampler, distribution
from sweep.space import Param, sample
from sweep.spec import SweepSpec
from sweep.status import TrialStatus

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

RAY_ID_ATTR = "ray_trial_id"
STATUS_ATTR = "status"
RETRY_OF_ATTR = "rerun_of"  # a killed trial's configuration, queued again on resume
OWNER_ATTR = "sweep_run"  # the MLflow parent run of the sweep that asked the trial (a study may be shared)
PRUNING_CURVE_ATTR = "pruning_curve"  # {step: value} of the pruner's metric, when it is not the objective
CONFIRMATION_ATTR = "confirmation"  # {param, value, of}: a confirmation trial of the verdict (sweep.confirm)


def is_shared(storage: str | None) -> bool:
    """A study other sweeps may use at the same time: one on a database server the user named."""
    return bool(storage) and not str(storage).startswith(("sqlite:", "journal:"))


def open_study(
    spec: SweepSpec, storage: str, study_name: str, last_step: int, *, owner: str | None = None
) -> optuna.Study:
    """Create (or re-open, for resume) the sweep's study; ``last_step`` is the largest step a trial reports.

    ``owner`` (the sweep's MLflow parent run, given when the study is shared): other sweeps may ask the
    same study at the same time, so each draws from a seed of its own, or their first draws would be equal.
    """
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_of(storage),
        sampler=build_sampler(spec.sampler, spec.space),
        pruner=spec.pruner.build(last_step),
        direction=spec.objective.direction,
        load_if_exists=True,
    )
    with warnings.catch_warnings():  # experimental since 3.2; optuna-dashboard shows the name, not "Objective 0"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.objective.metric])
    done = len(study.get_trials(deepcopy=False))
    offset = done + (int(hashlib.sha1(owner.encode()).hexdigest()[:5], 16) if owner else 0)
    if offset:  # resume: a sampler seeded as at the start would replay its first draws (tried configurations)
        study.sampler = build_sampler(spec.sampler, spec.space, seed_offset=offset)
    return study


def storage_of(url: str) -> Any:
    """The Optuna storage a sweep's storage URL names (``journal:PATH``, sqlite, or a database server)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if url.startswith("sqlite:"):
        return url
    return _rdb_storage(url)


def create_storage(url: str) -> None:
    """Create the storage's tables now (a database that sweeps will share; see ``_rdb_storage``)."""
    if url.startswith("sqlite:"):
        optuna.storages.RDBStorage(url)  # storage_of leaves sqlite URLs to create_study
    else:
        storage_of(url)


def _rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """A database server's storage. Optuna creates its tables on first use, and two sweeps creating them
    in an empty database at once collide (``CREATE TYPE`` twice): the loser waits and opens what the
    winner created."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=None)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt == attempts - 1:
                raise
            log.debug("schema creation raced (%s); retrying", type(exc).__name__)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class PruningJudge:
    """Optuna's pruner on a metric other than the objective (``pruner.metric``, e.g. val_loss in a sweep
    that maximizes accuracy): an in-memory study in that metric's direction, with the same pruner, holds
    one shadow trial per running trial. Each trial's curve of the metric is also kept on its own Optuna
    trial (``pruning_curve``), so a resumed sweep's judge starts knowing the trials already ended."""

    def __init__(self, pruner: optuna.pruners.BasePruner, direction: str) -> None:
        self.study = optuna.create_study(direction=direction, pruner=pruner)
        self._trials: dict[str, optuna.Trial] = {}
        self.curves: dict[str, dict[int, float]] = {}

    def add_ended(self, curve: Mapping[Any, float], state: TrialState) -> None:
        """A trial that ended before this judge existed (resume)."""
        steps = {int(step): float(value) for step, value in curve.items()}
        if not steps or state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        last = steps[max(steps)]
        value = last if state == TrialState.COMPLETE else None
        self.study.add_trial(optuna.trial.create_trial(state=state, value=value, intermediate_values=steps))

    def report(self, ray_id: str, value: float, step: int) -> bool:
        """Record the value; True when the pruner says the trial should stop."""
        if ray_id not in self._trials:
            self._trials[ray_id] = self.study.ask()
            self.curves[ray_id] = {}
        self._trials[ray_id].report(value, step)
        self.curves[ray_id][step] = value
        return self._trials[ray_id].should_prune()

    def end(self, ray_id: str, state: TrialState) -> None:
        trial = self._trials.pop(ray_id, None)
        curve = self.curves.pop(ray_id, {})
        if trial is None:
            return
        if state == TrialState.COMPLETE and curve:
            self.study.tell(trial, curve[max(curve)])
        else:
            self.study.tell(trial, state=TrialState.PRUNED if state == TrialState.PRUNED else TrialState.FAIL)


def pruning_judge(spec: SweepSpec, last_step: int) -> PruningJudge | None:
    """A judge when the pruner compares trials on another metric (or direction) than the objective's;
    None when the study's own pruner judges the objective (or Ray's ASHA judges)."""
    objective, direction = spec.objective.metric, spec.objective.direction
    if not spec.pruner.judges_apart(objective, direction):
        return None
    return PruningJudge(spec.pruner.build(last_step), spec.pruner.judged(objective, direction)[1])


@dataclass(frozen=True)
class PriorTrial:
    """A trial an earlier (interrupted) run of the sweep already ended."""

    number: int
    ray_id: str
    params: dict[str, Any]
    status: TrialStatus
    value: float | None
    step: int | None
    confirmation: bool = False  # one of the verdict's confirmation trials


class StudyBridge:
    """Ask/tell between Ray trial ids and Optuna trials: one Optuna trial per Ray trial, never two.

    Used in the driver by the searcher (ask), the pruning scheduler (report) and the observer (tell).
    """

    def __init__(
        self,
        study: optuna.Study,
        space: Mapping[str, Param],
        owner: str | None = None,
        shared: bool = False,
        judge: PruningJudge | None = None,
    ) -> None:
        self.study = study
        self.space = space
        self.owner = owner
        self.shared = shared
        self.judge = judge  # None: the study's own pruner judges the objective's values
        if judge is not None:
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                judge.add_ended(t.user_attrs.get(PRUNING_CURVE_ATTR, {}), t.state)
        self._trials: dict[str, optuna.Trial] = {}
        self._params: dict[str, dict[str, Any]] = {}
        self._pruned: set[str] = set()
        self._confirmations: dict[str, dict[str, Any]] = {}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._ours(frozen):  # this sweep was interrupted: its running trials will not report again
                optuna.Trial(study, frozen._trial_id).set_user_attr(STATUS_ATTR, TrialStatus.KILLED.value)
                study.tell(frozen.number, state=TrialState.FAIL)
        self._queue_killed()

    def _ours(self, t: optuna.trial.FrozenTrial) -> bool:
        """Asked by this sweep. In a shared study only a trial marked with our owner is ours (one another
        sweep has just asked is not marked yet); in the sweep's own study an unmarked one is (made before
        owners were recorded)."""
        owner = t.user_attrs.get(OWNER_ATTR)
        if self.owner is None:
            return True
        return owner == self.owner if self.shared else owner in (None, self.owner)

    def _queue_killed(self) -> None:
        """Resume is exact: each configuration a killed trial was running runs again, once."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if self._ours(t)]
        queued = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
        for t in trials:
            killed = t.state == TrialState.FAIL and t.user_attrs.get(STATUS_ATTR) == TrialStatus.KILLED.value
            if killed and t.number not in queued and t.params:
                attrs = {RETRY_OF_ATTR: t.number, **({OWNER_ATTR: self.owner} if self.owner else {})}
                if CONFIRMATION_ATTR in t.user_attrs:
                    attrs[CONFIRMATION_ATTR] = t.user_attrs[CONFIRMATION_ATTR]
                self.study.enqueue_trial(dict(t.params), user_attrs=attrs)

    def enqueue_confirmation(self, params: Mapping[str, Any], confirmation: Mapping[str, Any]) -> None:
        """Queue one of the verdict's confirmation trials: the next ask gets exactly these parameters
        (whatever they leave out, e.g. a condition's new child, the sampler draws)."""
        attrs = {CONFIRMATION_ATTR: dict(confirmation), **({OWNER_ATTR: self.owner} if self.owner else {})}
        self.study.enqueue_trial(dict(params), user_attrs=attrs, skip_if_exists=False)

    def queued_confirmations(self) -> int:
        """Confirmation trials queued and not yet asked (a resumed sweep runs them)."""
        waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return sum(1 for t in waiting if CONFIRMATION_ATTR in t.user_attrs and self._ours(t))

    def confirmation_of(self, ray_id: str) -> dict[str, Any] | None:
        """What a confirmation trial tests; None for a trial of the search."""
        attr = self._confirmations.get(ray_id)
        return dict(attr) if attr else None

    def exhausted(self) -> bool:
        """True when a grid has no unasked point left (other samplers never run out)."""
        sampler = self.study.sampler
        return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study)

    def ask(self, ray_id: str) -> dict[str, Any]:
        """Sampled parameters for ``ray_id`` (the same ones again if Ray retries the trial)."""
        if ray_id not in self._trials:
            trial = self.study.ask()
            trial.set_user_attr(RAY_ID_ATTR, ray_id)
            if self.owner is not None:
                trial.set_user_attr(OWNER_ATTR, self.owner)
            self._trials[ray_id] = trial
            self._params[ray_id] = sample(self.space, trial)
            if CONFIRMATION_ATTR in trial.user_attrs:  # (enqueued with it: ``enqueue_confirmation``)
                self._confirmations[ray_id] = trial.user_attrs[CONFIRMATION_ATTR]
        return dict(self._params[ray_id])

    def number(self, ray_id: str) -> int | None:
        trial = self._trials.get(ray_id)
        return trial.number if trial is not None else None

    def report(self, ray_id: str, value: float, step: int, judged: float | None = None) -> bool:
        """Pass an intermediate value of the objective to the study; True (and marked pruned) when the
        pruner says stop. With a judge, ``judged`` (the pruner's metric) decides instead."""
        trial = self._trials.get(ray_id)
        if trial is None:
            log.debug("report for unknown trial %s ignored", ray_id)
            return False
        if math.isfinite(value):
            trial.report(value, step)
        if self.judge is None:
            prune = math.isfinite(value) and trial.should_prune()
        else:
            if judged is None or not math.isfinite(judged):
                return False
            prune = self.judge.report(ray_id, judged, step)
            trial.set_user_attr(PRUNING_CURVE_ATTR, {str(k): v for k, v in self.judge.curves[ray_id].items()})
        if prune and ray_id in self._confirmations:
            return False  # a confirmation runs to its end: it is compared with a trial that did
        if prune:
            self.mark_pruned(ray_id)
        return prune

    def mark_pruned(self, ray_id: str) -> None:
        """The trial is being stopped by a pruning decision (ours, or Ray's ASHA)."""
        self._pruned.add(ray_id)

    def clear_pruned(self, ray_id: str) -> None:
        """The trial goes on after all (its report was its last)."""
        self._pruned.discard(ray_id)

    def was_pruned(self, ray_id: str) -> bool:
        return ray_id in self._pruned

    def tell(
        self, ray_id: str, status: TrialStatus, value: float | None, attrs: Mapping[str, Any] | None = None
    ) -> None:
        """End the Optuna trial in the state its status maps to; only completed trials carry a value."""
        trial = self._trials.pop(ray_id, None)
        self._pruned.discard(ray_id)
        if trial is None:
            log.debug("tell for unknown or already ended trial %s ignored", ray_id)
            return
        for key, attr in (attrs or {}).items():
            trial.set_user_attr(key, attr)
        trial.set_user_attr(STATUS_ATTR, status.value)
        state = TrialState[status.optuna_state]
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL  # completed without a usable objective: never a candidate for best
        self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        if self.judge is not None:
            self.judge.end(ray_id, state)

    def prior_trials(self) -> list[PriorTrial]:
        """Trials an earlier (interrupted) run of this sweep already ended, for resume."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if not t.state.is_finished() or not self._ours(t):  # running or queued; or another sweep's
                continue
            # a FAIL without our status was left running by an interrupted run: killed, not a result
            default = {TrialState.COMPLETE: TrialStatus.COMPLETED, TrialState.PRUNED: TrialStatus.PRUNED}.get(
                t.state, TrialStatus.KILLED
            )
            status = TrialStatus(t.user_attrs.get(STATUS_ATTR, default))
            out.append(
                PriorTrial(
                    t.number,
                    t.user_attrs.get(RAY_ID_ATTR, str(t.number)),
                    self._full(t.params),
                    status,
                    t.value,
                    t.last_step,
                    CONFIRMATION_ATTR in t.user_attrs,
                )
            )
        return out

    def _full(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's whole configuration: what Optuna sampled, plus the fixed and tied values it never sees."""
        if not sampled:
            return {}
        try:
            return sample(self.space, optuna.trial.FixedTrial(dict(sampled)))
        except ValueError:  # a space edited since (resume overrides): what Optuna knows
            return dict(sampled)

    def counts(self) -> dict[str, int]:
        states = [t.state.name.lower() for t in self.study.get_trials(deepcopy=False) if self._ours(t)]
        return {s: states.count(s) for s in sorted(set(states))}


_LEARNED_FROM = (TrialState.COMPLETE, TrialState.PRUNED)  # what TPE and the pruners read


def ended_trials(storage: str, study_name: str, owner: str | None = None) -> list[dict[str, Any]]:
    """A stored study's trials a sampler or pruner learns from, as plain data (for a warm start): completed,
    pruned, and diverged ones (a FAIL whose status says so: a configuration not worth asking again). With
    ``owner`` (a shared study), only that sweep's."""
    study = optuna.load_study(study_name=study_name, storage=storage_of(storage))
    out = []
    for t in study.get_trials(deepcopy=False):
        diverged = t.state == TrialState.FAIL and t.user_attrs.get(STATUS_ATTR) == TrialStatus.DIVERGED.value
        if not (t.state in _LEARNED_FROM or diverged) or (owner is not None and t.user_attrs.get(OWNER_ATTR) != owner):
            continue
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "value": t.value if t.state in _LEARNED_FROM else None,
                "curve": {int(s): float(v) for s, v in t.intermediate_values.items()},
                "user_attrs": dict(t.user_attrs),
            }
        )
    return out


def add_ended(study: optuna.Study, space: Mapping[str, Param], trials: Sequence[Any]) -> None:
    """Add ended trials (``warm_start.Carried``: params of ``space``, state, value, curve, attrs) to
    ``study`` as they ended, for its sampler and pruner to know."""
    study.add_trials(
        [
            optuna.trial.create_trial(
                params=t.params,
                distributions={name: distribution(space[name]) for name in t.params},
                value=t.value,
                intermediate_values=t.curve,
                state=TrialState[t.state],
                user_attrs=t.attrs,
            )
            for t in trials
        ]
    )


def param_importances(
    space: Mapping[str, Param], points: Sequence[tuple[dict[str, Any], float]], names: Sequence[str]
) -> dict[str, float]:
    """fANOVA importance (Optuna's evaluator, seeded) of ``names`` for (params, value) points: a
    throw-away study holds exactly the points given, e.g. values at a common step with pruned trials."""
    if len({value for _, value in points}) < 2:
        return dict.fromkeys(names, 0.0)  # nothing varies: nothing to explain
    distributions = {n: distribution(space[n]) for n in names}
    study = optuna.create_study(direction="maximize")
    study.add_trials(
        [optuna.trial.create_trial(params=params, distributions=distributions, value=value) for params, value in points]
    )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, params=list(names)))


def study_trials(storage: str, study_name: str, owner: str | None = None, shared: bool = False) -> list[dict[str, Any]]:
    """Every trial of a stored study that sweep ``owner`` asked, as plain data: number, status, params,
    the objective per step. (In a study of one sweep's own, an unmarked trial predates owners: its.)"""
    study = optuna.load_study(study_name=study_name, storage=storage_of(storage))
    out = []
    for t in study.get_trials(deepcopy=False):
        marked = t.user_attrs.get(OWNER_ATTR, None if shared else owner)
        if not t.state.is_finished() or (owner is not None and marked != owner):
            continue
        default = TrialStatus.COMPLETED if t.state == TrialState.COMPLETE else TrialStatus.FAILED
        out.append(
            {
                "number": t.number,
                "status": str(t.user_attrs.get(STATUS_ATTR, default.value)),
                "params": dict(t.params),
                "curve": {int(s): float(v) for s, v in t.intermediate_values.items()},
                "value": t.value if t.state == TrialState.COMPLETE else None,
                "diverged_step": t.user_attrs.get("diverged_step"),
                "confirmation": t.user_attrs.get(CONFIRMATION_ATTR),
            }
        )
    return out
