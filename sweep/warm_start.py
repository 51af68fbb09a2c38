"""Warm start: a new sweep's study begins with an earlier sweep's ended trials that lie inside its space,
so its sampler and its pruner start knowing them. The copies stay the earlier sweep's (marked with its
MLflow parent run): they use none of the new sweep's budget, get no trial runs in its record and are no
evidence for its verdict. No optuna import here (``optuna_study`` reads and writes the studies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import SpecError
from sweep.run_dir import SPEC_FILE, STATE_FILE
from sweep.space import Param, can_take, sample
from sweep.spec import SweepSpec, load_spec
from trainers.errors import ConfigError

FROM_ATTR = "warm_start_from"  # the MLflow parent run of the sweep that ran the copied trial
NUMBER_ATTR = "warm_start_number"  # the trial's number in that sweep's study

_FIX = "pass the run dir of an earlier sweep (runs/NAME/TIME), or warm_start.from_run=null to start cold"


@dataclass(frozen=True)
class Previous:
    """The sweep ``warm_start.from_run`` names, as its run dir records it."""

    run_dir: Path
    spec: SweepSpec
    parent_run_id: str
    storage: str  # as stored (a literal password masked)


@dataclass(frozen=True)
class Carried:
    """One earlier trial as the new study gets it."""

    params: dict[str, Any]  # the new space's sampled parameters
    state: str  # COMPLETE | PRUNED | FAIL (a diverged trial)
    value: float | None
    curve: dict[int, float]  # the objective per step (what the pruner compares)
    attrs: dict[str, Any]


def previous_sweep(spec: SweepSpec) -> Previous | None:
    """The earlier sweep of ``warm_start.from_run`` (None for a cold start). Raises SpecError, one line
    naming the field, the value and the fix, when its run dir cannot be read or its objective differs."""
    where = spec.warm_start.from_run
    if where is None:
        return None
    run_dir = Path(where)
    if not run_dir.is_dir():
        raise SpecError([f"warm_start.from_run: '{where}' is not a directory; {_FIX}"])
    from sweep.run.record import read_state

    try:
        state = read_state(run_dir)
    except SpecError:
        raise SpecError([f"warm_start.from_run: '{where}' holds no readable {STATE_FILE}; {_FIX}"]) from None
    parent, storage = state.parent_run_id, state.storage
    try:
        old = load_spec(run_dir / SPEC_FILE)
    except ConfigError as exc:
        raise SpecError(
            [f"warm_start.from_run: '{where}' holds no readable {SPEC_FILE} ({exc.problems[0]}); {_FIX}"]
        ) from None
    if (old.objective.metric, old.objective.direction) != (spec.objective.metric, spec.objective.direction):
        raise SpecError(
            [
                f"warm_start.from_run: '{where}' optimized {old.objective.metric} ({old.objective.direction}), this "
                f"sweep {spec.objective.metric} ({spec.objective.direction}): its values cannot start this study; "
                "use the same objective, or warm_start.from_run=null"
            ]
        )
    return Previous(run_dir, old, parent, storage)


def same_study(previous: Previous, spec: SweepSpec, storage: str) -> bool:
    """The new sweep opens the earlier sweep's own study (one database, one name): its trials are there."""
    return previous.storage == storage and previous.spec.name == spec.name


def carry(previous: Previous, trials: list[dict[str, Any]], spec: SweepSpec) -> tuple[list[Carried], int]:
    """The earlier sweep's ended trials (``optuna_study.ended_trials``) that lie inside ``spec``'s space,
    marked as the earlier sweep's; and how many lie outside. A trial copied into the earlier sweep from
    one before it keeps its marks: the chain's memory goes on."""
    from sweep.optuna_study import OWNER_ATTR, PRUNING_CURVE_ATTR, RAY_ID_ATTR, RETRY_OF_ATTR

    old = previous.spec
    same_judge = old.pruner.judged(old.objective.metric, old.objective.direction) == spec.pruner.judged(
        spec.objective.metric, spec.objective.direction
    )
    carried = []
    for t in trials:
        params = inside(old, spec, t["params"])
        if params is None:
            continue
        attrs = dict(t["user_attrs"])
        if not same_judge:  # the pruner's curve of another metric would mislead this sweep's pruner
            attrs.pop(PRUNING_CURVE_ATTR, None)
        if FROM_ATTR not in attrs:
            attrs.update({OWNER_ATTR: previous.parent_run_id, FROM_ATTR: previous.parent_run_id})
            attrs[NUMBER_ATTR] = t["number"]
        for own in (RAY_ID_ATTR, RETRY_OF_ATTR):  # the earlier sweep's bookkeeping, meaningless here
            attrs.pop(own, None)
        carried.append(Carried(params, t["state"], t["value"], dict(t["curve"]), attrs))
    return carried, len(trials) - len(carried)


def inside(old: SweepSpec, new: SweepSpec, sampled: Mapping[str, Any]) -> dict[str, Any] | None:
    """The new space's sampled parameters of a trial that sampled ``sampled`` in ``old``'s space; None
    when it lies outside the new space: a searched value out of its new range or choices, or a value the
    new sweep fixes, ties or leaves to its template that differs from the one the trial ran with."""
    try:
        ran = old.trial_config(sample(old.space, _Replay(sampled)))
        replay = _Replay({path: _at(ran, path) for path in new.space}, new.space)
        now = new.trial_config(sample(new.space, replay))
    except (_Outside, ConfigError):
        return None
    if any(_at(now, path) != _at(ran, path) for path in {*old.space, *new.space}):
        return None
    return replay.asked


def _at(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


class _Outside(Exception):
    """A replayed value the space cannot give (or none)."""


class _Replay:
    """A ``Suggester`` answering with the values a trial ran with; with ``space``, only values it can give."""

    def __init__(self, values: Mapping[str, Any], space: Mapping[str, Param] | None = None) -> None:
        self.values, self.space = values, space
        self.asked: dict[str, Any] = {}

    def _give(self, name: str) -> Any:
        if name not in self.values or (self.space is not None and not can_take(self.space[name], self.values[name])):
            raise _Outside(name)
        self.asked[name] = self.values[name]
        return self.values[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.asked[name] = value = float(self._give(name))
        return value

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.asked[name] = value = int(self._give(name))
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._give(name)


def read(previous: Previous, spec: SweepSpec, storage: str) -> list[dict[str, Any]]:
    """The earlier sweep's ended trials (``optuna_study.ended_trials``), read before the new sweep writes
    anything: an unreadable study is one SpecError line. None to read when the new sweep opens the earlier
    one's own study (``storage``: the new study's URL as stored)."""
    from sweep import credentials, optuna_study

    if same_study(previous, spec, storage):
        return []
    url = credentials.resolve(previous.storage, "warm_start.from_run")  # a masked password: SecretError, one line
    shared = optuna_study.is_shared(previous.storage)
    try:
        return optuna_study.ended_trials(url, previous.spec.name, owner=previous.parent_run_id if shared else None)
    except Exception as exc:  # the earlier study is gone or unreadable: the user's to fix, in one line
        raise SpecError(
            [
                f"warm_start.from_run: the study of '{previous.run_dir}' ({credentials.mask(previous.storage)}) cannot be "
                f"read ({type(exc).__name__}); {_FIX}"
            ]
        ) from None


def warm(
    study: Any, previous: Previous, spec: SweepSpec, storage: str, trials: list[dict[str, Any]] | None = None
) -> str:
    """Copy the earlier sweep's trials (``trials``: ``read``'s, read now if not given) inside ``spec``'s
    space into the new sweep's ``study`` (``storage``: its URL as stored); the line the sweep prints."""
    from sweep import optuna_study

    if same_study(previous, spec, storage):
        return f"warm start: {previous.run_dir} shares this sweep's study ({storage}): its trials are there already"
    carried, outside = carry(previous, read(previous, spec, storage) if trials is None else trials, spec)
    optuna_study.add_ended(study, spec.space, carried)
    return f"warm start: {len(carried)} trials of {previous.run_dir} inside the new space ({outside} outside)"
