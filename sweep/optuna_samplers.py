"""The study's sampler as Optuna runs it: the kind the spec names (``samplers``), wrapped where a finite
space makes repeats avoidable, and the grid sampler made fit for ask/tell. The Optuna adapter, with
``optuna_study``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from sweep.space import (
    CategoricalParam,
    FixedParam,
    FloatParam,
    IntParam,
    Param,
    TiedParam,
    grid_points,
    is_conditional,
)

if TYPE_CHECKING:
    from sweep.samplers import BaseSampler


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """A searched parameter as Optuna's distribution."""
    if isinstance(p, FloatParam):
        return optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    if isinstance(p, IntParam):
        return optuna.distributions.IntDistribution(p.low, p.high, log=p.log, step=p.step)
    assert isinstance(p, CategoricalParam)
    return optuna.distributions.CategoricalDistribution(p.choices)


def build_sampler(spec: BaseSampler, space: Mapping[str, Param], seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler: ``spec``'s kind (re-seeded by ``seed_offset`` on resume, so it does not replay
    its first draws), and in a finite space one that never repeats a configuration already tried."""
    seeded = spec.model_copy(update={"seed": spec.seed + seed_offset}) if seed_offset else spec
    base = seeded.build(space)
    grid = grid_points(space)
    finite = not is_conditional(space) and all(
        path in grid or isinstance(p, FixedParam | TiedParam) for path, p in space.items()
    )
    size = math.prod(len(v) for v in grid.values()) if grid else 0
    if isinstance(base, optuna.samplers.GridSampler) or not finite or not 0 < size <= _MAX_ENUMERATED:
        return base
    return _NoRepeat(base, grid, {path: distribution(space[path]) for path in grid}, seeded.seed)


_MAX_ENUMERATED = 200_000  # beyond this many configurations a repeat is improbable and listing them costly


class _NoRepeat(optuna.samplers.BaseSampler):
    """A finite space's sampler that asks no configuration a finished or running trial already has: the
    wrapped sampler proposes the whole configuration (its relative sample, completed at random where it
    proposes nothing, e.g. while TPE is still random), a repeat is drawn again, and after a few repeats
    an untried configuration is chosen at random. Once all were tried, repeats are allowed."""

    DRAWS = 10

    def __init__(
        self,
        base: optuna.samplers.BaseSampler,
        grid: Mapping[str, list[Any]],
        space: Mapping[str, optuna.distributions.BaseDistribution],
        seed: int,
    ) -> None:
        self.base = base
        self.grid = dict(grid)
        self.space = dict(space)
        self.rng = np.random.RandomState(seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return dict(self.space)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        names = list(self.grid)
        tried = {
            tuple(t.params.get(n) for n in names)
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and (t.state.is_finished() or t.state == TrialState.RUNNING) and t.params
        }
        params: dict[str, Any] = {}
        for _ in range(self.DRAWS):
            params = self._propose(study, trial)
            if tuple(params[n] for n in names) not in tried:
                return params
        untried = [c for c in itertools.product(*self.grid.values()) if c not in tried]
        if not untried:
            return params  # every configuration was tried: the space is exhausted, a repeat is all there is
        return dict(zip(names, untried[self.rng.randint(len(untried))], strict=True))

    def _propose(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        base_space = {n: d for n, d in self.base.infer_relative_search_space(study, trial).items() if n in self.grid}
        proposed = dict(self.base.sample_relative(study, trial, base_space)) if base_space else {}
        for name, values in self.grid.items():
            value = proposed.get(name)
            if value in values:
                continue
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in [value, *values])
            if numeric:  # a stepped float, off by rounding
                proposed[name] = min(values, key=lambda v: abs(v - value))
            else:
                proposed[name] = values[self.rng.randint(len(values))]
        return proposed

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self.rng.seed()


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler calls ``study.stop()`` when the grid is done, which only works inside
    ``study.optimize``; with ask/tell the searcher checks ``is_exhausted`` instead. And Optuna counts a
    point that is still running as unvisited (it would evaluate it twice); trials run concurrently
    here, so a point is taken once it is asked."""

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        return None

    def is_exhausted(self, study: optuna.Study) -> bool:
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False  # a resumed sweep's killed points, queued to run again
        taken = {
            t.system_attrs["grid_id"]
            for t in study.get_trials(deepcopy=False)
            if "grid_id" in t.system_attrs and (t.state.is_finished() or t.state == TrialState.RUNNING)
        }
        return len(taken) >= len(self._all_grids)
