"""Sampler settings, one class per kind, each with only its own fields and building its own sampler.

Adding a sampler is one class here, listed in ``SamplerSpec``. Part of the spec: optuna is imported only
where a sampler is built (the Optuna side, the study's sampler as a whole, is ``optuna_samplers``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, NonNegativeInt

from sweep.space import FloatParam, Param, grid_points, is_conditional
from trainers.settings import Section

if TYPE_CHECKING:
    import optuna


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
        import optuna

        with warnings.catch_warnings():  # `group` is "experimental" since Optuna 2.8; it is what conditionals need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=self.num_startup_trials, multivariate=True, group=is_conditional(space)
            )


class RandomSampler(BaseSampler):
    kind: Literal["random"] = "random"

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.RandomSampler(seed=self.seed)


class GridSampler(BaseSampler):
    """Every combination once, in a seeded order; the sweep ends early when the grid is exhausted."""

    kind: Literal["grid"] = "grid"

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        from sweep.optuna_samplers import AskTellGridSampler

        return AskTellGridSampler(grid_points(space), seed=self.seed)

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
        import optuna

        return optuna.samplers.CmaEsSampler(seed=self.seed, n_startup_trials=self.num_startup_trials)


class GpSampler(BaseSampler):
    """Gaussian-process Bayesian optimisation."""

    kind: Literal["gp"] = "gp"
    num_startup_trials: NonNegativeInt = Field(5, description="Random trials before modelling.")

    def build(self, space: Mapping[str, Param]) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=self.num_startup_trials)


SamplerSpec = Annotated[
    TpeSampler | RandomSampler | GridSampler | CmaEsSampler | GpSampler, Field(discriminator="kind")
]
