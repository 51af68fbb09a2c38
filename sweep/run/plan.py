"""The sweep's plan, checked before any trial starts: the data is read and the model checked against
every value the space can give, and the last step of each trial is known (the pruners' horizon)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.errors import SpecError
from sweep.space import candidate_values
from sweep.spec import SweepSpec


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
    start from is written there (``_save_split``), for them to load (``trainers.data.split.load_splits``)."""
    from trainers.errors import ConfigError
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


def last_step_in_driver(spec: SweepSpec, plan: SweepPlan) -> Callable[[Mapping[str, Any]], int | None]:
    """``last_step_of`` without reading the data or the model again (both checked by preflight for every
    value of the space): torch stays out of the driver. A space over data or split reads them again."""
    from trainers.errors import ConfigError
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
    from trainers.errors import ConfigError
    from trainers.plan import plan_trial

    try:
        return plan_trial(spec.trial_config(params)).last_step
    except ConfigError:
        return None
