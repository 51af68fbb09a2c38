"""Pruner settings, one class per kind: each has only its own fields and knows the whole strategy, how
it judges trials (``judged``, ``judges_apart``), the Optuna pruner it becomes (``build``) and the Ray
scheduler it becomes (``asha_rungs``). The Optuna adapter (``optuna_study``) and the Ray adapter
(``sweep.ray.search``) ask; neither looks at a pruner's class. Adding a pruner is one class here, listed in
``PrunerSpec``.

Part of the spec: optuna is imported only where a pruner is built, so reading a spec imports neither
optuna nor ray.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from trainers.config import TrialConfig
from trainers.settings import Section

if TYPE_CHECKING:
    import optuna

LOWER_IS_BETTER = ("loss", "perplexity", "error", "mse", "mae", "rmse")


@dataclass(frozen=True)
class AshaRungs:
    """Ray's ASHA scheduler as a pruner sets it: the first rung at ``min_resource`` steps, and
    1/``reduction_factor`` of the trials kept at each rung."""

    min_resource: int
    reduction_factor: int


class BasePruner(Section):
    kind: str

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        """The Optuna pruner; ``last_step`` is the largest step a trial of the sweep reports."""
        raise NotImplementedError

    def judged(self, objective: str, objective_direction: str) -> tuple[str, str]:
        """The metric this pruner compares trials on, and its direction: the objective's by default."""
        return objective, objective_direction

    def asha_rungs(self) -> AshaRungs | None:
        """The Ray scheduler this pruner becomes: Ray's ASHA with these rungs, or None for the sweep's
        pruning scheduler, which hands every report to the Optuna pruner that ``build`` made."""
        return None

    def judges_apart(self, objective: str, objective_direction: str) -> bool:
        """True when the Optuna pruner compares another metric (or direction) than the study's objective:
        it then judges in a study of its own (``optuna_study.PruningJudge``), in ``judged``'s direction."""
        return self.asha_rungs() is None and self.judged(objective, objective_direction) != (
            objective,
            objective_direction,
        )

    def problems(self, template: TrialConfig, last_step: int | None) -> list[str]:
        """What this pruner needs from the trials; ``last_step`` is None until the data is read."""
        return []


class _JudgesAMetric(BasePruner):
    metric: str | None = Field(
        None,
        description="The reported metric trials are compared on; None = the objective's. Validation loss "
        "separates trials that learn from those that do not steps before accuracy moves off the majority "
        "class, so `metric: val_loss` can prune at the first evaluation.",
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Of ``metric``; None = minimize for losses and errors, maximize otherwise."
    )

    def judged(self, objective: str, objective_direction: str) -> tuple[str, str]:
        if self.metric is None or self.metric == objective:
            return objective, self.direction or objective_direction
        lower = any(word in self.metric.lower() for word in LOWER_IS_BETTER)
        return self.metric, self.direction or ("minimize" if lower else "maximize")


class _RungPruner(_JudgesAMetric):
    min_resource: PositiveInt = Field(1, description="The first rung, in reported steps.")
    reduction_factor: int = Field(3, ge=2, description="Keep 1/reduction_factor of the trials at each rung.")

    def problems(self, template: TrialConfig, last_step: int | None) -> list[str]:
        if last_step is not None and self.min_resource > last_step:
            return [
                f"pruner.min_resource: {self.min_resource} > {last_step}, the last step a trial reports; "
                f"lower pruner.min_resource or give trials more steps"
            ]
        return []


class MedianPruner(_JudgesAMetric):
    """Prune a trial whose value is worse than the median of earlier trials at the same step."""

    kind: Literal["median"] = "median"
    warmup_steps: NonNegativeInt = Field(0, description="Steps before a trial may be pruned.")
    num_startup_trials: NonNegativeInt = Field(2, description="Trials that are never pruned.")

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.MedianPruner(n_startup_trials=self.num_startup_trials, n_warmup_steps=self.warmup_steps)


class PercentilePruner(_JudgesAMetric):
    """Prune a trial below the given percentile of earlier trials at the same step."""

    kind: Literal["percentile"] = "percentile"
    percentile: float = Field(25.0, gt=0.0, lt=100.0, description="Keep trials above this percentile.")
    warmup_steps: NonNegativeInt = Field(0, description="Steps before a trial may be pruned.")
    num_startup_trials: NonNegativeInt = Field(2, description="Trials that are never pruned.")

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.PercentilePruner(
            self.percentile, n_startup_trials=self.num_startup_trials, n_warmup_steps=self.warmup_steps
        )


class SuccessiveHalvingPruner(_RungPruner):
    """Asynchronous successive halving (Optuna's)."""

    kind: Literal["successive_halving"] = "successive_halving"

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.min_resource, reduction_factor=self.reduction_factor
        )


class HyperbandPruner(_RungPruner):
    """Hyperband: several successive-halving brackets; the largest resource is the trials' last step."""

    kind: Literal["hyperband"] = "hyperband"

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.HyperbandPruner(
            min_resource=self.min_resource, max_resource=last_step, reduction_factor=self.reduction_factor
        )


class WilcoxonPruner(BasePruner):
    """Compare a k-fold trial's per-fold values with the best trial's on the same folds."""

    kind: Literal["wilcoxon"] = "wilcoxon"
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0, description="Prune below this p-value.")

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        with warnings.catch_warnings():  # "experimental" since Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=self.p_threshold)

    def problems(self, template: TrialConfig, last_step: int | None) -> list[str]:
        if template.split.num_folds is None:
            return ["pruner.kind: 'wilcoxon' compares folds; set trial.split.num_folds (>= 2) or pick another"]
        return []


class AshaPruner(_RungPruner):
    """Ray Tune's ASHA scheduler prunes; every value still lands in the Optuna study."""

    kind: Literal["asha"] = "asha"

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.NopPruner()  # Ray's ASHA judges (``asha_rungs``); the study records the values

    def asha_rungs(self) -> AshaRungs:
        return AshaRungs(self.min_resource, self.reduction_factor)


class NoPruner(BasePruner):
    """Every trial runs to its last step."""

    kind: Literal["none"] = "none"

    def build(self, last_step: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.NopPruner()


PrunerSpec = Annotated[
    MedianPruner
    | PercentilePruner
    | SuccessiveHalvingPruner
    | HyperbandPruner
    | WilcoxonPruner
    | AshaPruner
    | NoPruner,
    Field(discriminator="kind"),
]
