"""Sampler settings, one class per kind, each with only its own fields and building its own sampler.

An Optuna adapter (with ``pruners.py`` and ``optuna_study.py``). Adding a sampler is one class here,
listed in ``SamplerSpec``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
import optuna
from optuna.trial import TrialState
from pydantic import Field, NonNegativeInt

from sweep.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, TiedParam, is_conditional
from trainers.settings import Section


class BaseSampler(Section):
    kind: str
    seed: int = Field(0, description="Same seed, same space -> the same suggestions.")

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def problems(self, space: Mapping[str, Param]) -> list[str]:
        """What this sampler needs from the space."""
        return []


class TpeSampler(BaseSampler):
    """Tree-structured Parzen estimator: multivariate, and grouped when the space is conditional."""

    kind: Literal["tpe"] = "tpe"
    num_startup_trials: NonNegativeInt = Field(5, description="Random trials before modelling.")

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():  # `group` is "experimental" since Optuna 2.8; it is what conditionals need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=self.num_startup_trials, multivariate=True, group=is_conditional(space)
            )


class RandomSampler(BaseSampler):
    kind: Literal["random"] = "random"

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class GridSampler(BaseSampler):
    """Every combination once, in a seeded order; the sweep ends early when the grid is exhausted."""

    kind: Literal["grid"] = "grid"

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        return _AskTellGridSampler(_grid(space), seed=self.seed)

    def problems(self, space: Mapping[str, Param]) -> list[str]:
        return [
            f"space.{path}: grid sampling needs finite values; use categorical or a step"
            for path, p in space.items()
            if isinstance(p, FloatParam) and p.step is None
        ]


class CmaEsSampler(BaseSampler):
    kind: Literal["cmaes"] = "cmaes"
    num_startup_trials: NonNegativeInt = Field(5, description="Random trials before modelling.")

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        return optuna.samplers.CmaEsSampler(seed=self.seed, n_startup_trials=self.num_startup_trials)


class GpSampler(BaseSampler):
    """Gaussian-process Bayesian optimisation."""

    kind: Literal["gp"] = "gp"
    num_startup_trials: NonNegativeInt = Field(5, description="Random trials before modelling.")

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=self.num_startup_trials)


SamplerSpec = Annotated[
    TpeSampler | RandomSampler | GridSampler | CmaEsSampler | GpSampler, Field(discriminator="kind")
]


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
    grid = _grid(space)
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


class _AskTellGridSampler(optuna.samplers.GridSampler):
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


def _grid(space: Mapping[str, Param]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for path, p in space.items():
        if isinstance(p, CategoricalParam):
            grid[path] = list(p.choices)
        elif isinstance(p, IntParam):
            grid[path] = list(range(p.low, p.high + 1, p.step))
        elif isinstance(p, FloatParam) and p.step is not None:
            count = math.floor((p.high - p.low) / p.step + 1e-9) + 1
            grid[path] = [p.low + i * p.step for i in range(count)]
    return grid
