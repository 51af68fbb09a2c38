"""SweepSpec: one YAML file is a whole sweep. Validated once, all problems reported together."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)

from sweep.space import Param, as_overrides, candidate_values, merge, param_rules
from trainers.config import (
    METRICS,
    ConfigError,
    TrialConfig,
    apply_overrides,
    format_validation_error,
    read_yaml_file,
    trial_config_from_dict,
)


class SweepError(Exception):
    """Root of the sweep's user-facing errors."""


class SpecError(SweepError):
    """A spec (or its data) is wrong; ``problems`` has one fix-it line each. The CLI exits 2."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return (type(self), (self.problems,))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Objective(_Section):
    metric: str = Field("val_loss", description="A metric the trial reports, e.g. val_accuracy.")
    direction: Literal["minimize", "maximize"] = "minimize"


class Sampler(_Section):
    kind: Literal["tpe", "random", "grid", "cmaes", "gp"] = "tpe"
    seed: int = 0
    num_startup_trials: NonNegativeInt = Field(5, description="tpe/gp/cmaes: random trials before modelling.")


class Pruner(_Section):
    kind: Literal["median", "percentile", "successive_halving", "hyperband", "wilcoxon", "asha", "none"] = "median"
    warmup_steps: NonNegativeInt = Field(0, description="median/percentile: steps before a trial may be pruned.")
    num_startup_trials: NonNegativeInt = Field(2, description="median/percentile: trials that are never pruned.")
    percentile: float = Field(25.0, gt=0.0, lt=100.0, description="percentile: keep trials above this.")
    min_resource: PositiveInt = Field(1, description="successive_halving/hyperband/asha: first rung (steps).")
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband/asha.")
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0, description="wilcoxon: p-value below which to prune.")


class Budget(_Section):
    num_trials: PositiveInt = 10
    max_concurrent_trials: PositiveInt = 2
    time_budget_s: PositiveFloat | None = Field(None, description="Wall clock for the whole sweep.")


class Resources(_Section):
    cpus_per_trial: PositiveFloat = 1.0
    gpus_per_trial: NonNegativeFloat = Field(0.0, description="Fractions share one GPU between trials.")


class Tracking(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI; None = $MLFLOW_TRACKING_URI or runs/mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; None = the spec's name.")


class Execution(_Section):
    address: str | None = Field(None, description="Ray cluster address; None = a local Ray in the run dir.")
    dashboard: bool = True
    storage: str | None = Field(None, description="Optuna storage URL; None = sqlite in the run dir.")
    runs_dir: str = Field("runs", description="Where run directories go, relative to the working directory.")
    save_best_model: bool = True


class Acceptance(_Section):
    threshold: float | None = Field(None, description="Accept the best trial if its objective reaches this.")


class SweepSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    trial: dict[str, Any] = Field(default_factory=dict, description="The trial template (a TrialConfig).")
    space: dict[str, Param] = Field(default_factory=dict)
    objective: Objective = Field(default_factory=Objective)  # type: ignore[arg-type]
    sampler: Sampler = Field(default_factory=Sampler)  # type: ignore[arg-type]
    pruner: Pruner = Field(default_factory=Pruner)  # type: ignore[arg-type]
    budget: Budget = Field(default_factory=Budget)  # type: ignore[arg-type]
    resources: Resources = Field(default_factory=Resources)  # type: ignore[arg-type]
    tracking: Tracking = Field(default_factory=Tracking)  # type: ignore[arg-type]
    execution: Execution = Field(default_factory=Execution)  # type: ignore[arg-type]
    acceptance: Acceptance = Field(default_factory=Acceptance)  # type: ignore[arg-type]

    def trial_template(self) -> dict[str, Any]:
        """The trial section with the objective and resources folded in (what every trial starts from)."""
        threads = max(1, int(self.resources.cpus_per_trial))
        fixed = {
            "eval": {"metric": self.objective.metric, "direction": self.objective.direction},
            "num_threads": threads,
        }
        return merge(self.trial, fixed)

    def trial_config(self, params: Mapping[str, Any]) -> TrialConfig:
        """The TrialConfig of one trial: template + sampled parameters."""
        return trial_config_from_dict(merge(self.trial_template(), as_overrides(params)))


def _trial_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            paths |= _trial_fields(ann, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


TRIAL_PATHS = frozenset(_trial_fields(TrialConfig))


PARAM_TYPES = ("float", "int", "categorical", "fixed")


def _check_types(data: Mapping[str, Any]) -> list[str]:
    """A readable message for a space entry without a valid ``type`` (pydantic's is cryptic)."""
    space = data.get("space")
    if not isinstance(space, Mapping):
        return []
    problems = []
    for path, entry in space.items():
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind not in PARAM_TYPES:
            problems.append(
                f"space.{path}: type {kind!r} is not one of {list(PARAM_TYPES)}; "
                f"write e.g. {{type: float, low: 1e-5, high: 1e-2, log: true}}"
            )
    return problems


def _check(spec: SweepSpec) -> list[str]:
    """Rules that span sections; each line names the YAML path, the value and the fix."""
    problems: list[str] = []
    task = spec.trial.get("task", "classification")
    known = METRICS.get(task) if isinstance(task, str) else None
    if known is not None and spec.objective.metric not in known:
        problems.append(
            f"objective.metric: '{spec.objective.metric}' is not reported for {task}; use one of {list(known)}"
        )
        spec = spec.model_copy(update={"objective": Objective(metric=known[1], direction=spec.objective.direction)})
    try:
        template = spec.trial_config({})
    except ConfigError as exc:
        return problems + [f"trial.{line}" if not line.startswith("trial.") else line for line in exc.problems]
    earlier: list[str] = []
    for path, p in spec.space.items():
        if path not in TRIAL_PATHS:
            close = difflib.get_close_matches(path, sorted(TRIAL_PATHS), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}?" if close else "use a dotted trial field such as optim.learning_rate"
            problems.append(f"space.{path}: names no trial field; {hint}")
            continue
        problems += param_rules(path, p)
        for cond in p.when or {}:
            if cond not in earlier:
                problems.append(
                    f"space.{path}.when: '{cond}' is not a parameter listed before '{path}'; "
                    f"list '{cond}' earlier in space"
                )
        for value in candidate_values(p):
            try:
                spec.trial_config({path: value})
            except ConfigError as exc:
                detail = exc.problems[0].split(": ", 1)[-1]
                problems.append(f"space.{path}: value {value!r} does not fit the trial ({detail})")
        earlier.append(path)
    if spec.pruner.kind == "wilcoxon" and template.split.num_folds is None:
        problems.append("pruner.kind: 'wilcoxon' compares folds; set trial.split.num_folds (>= 2) or pick another")
    if spec.sampler.kind == "grid":
        for path, p in spec.space.items():
            if p.type == "float" and p.step is None:  # type: ignore[union-attr]
                problems.append(f"space.{path}: grid sampling needs finite values; use categorical or a step")
    return problems


def validate_spec(data: Mapping[str, Any]) -> SweepSpec:
    bad_types = _check_types(data)
    if bad_types:
        raise SpecError(bad_types)
    try:
        spec = SweepSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None
    problems = _check(spec)
    if problems:
        raise SpecError(problems)
    return spec


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a spec YAML, apply ``key=value`` overrides (``trial.optim.max_steps=10``), validate it."""
    try:
        data = read_yaml_file(path)
        space_keys = sorted(data.get("space") or {}, key=len, reverse=True)
        plain = []
        for item in overrides:
            key, _, raw = item.partition("=")
            # space keys are dotted paths themselves: space.optim.learning_rate.high=1e-2
            target = next((k for k in space_keys if key.startswith(f"space.{k}.")), None)
            if target is None:
                plain.append(item)
                continue
            field = key[len(f"space.{target}.") :]
            data["space"][target] = {**data["space"][target], **apply_overrides({}, [f"{field}={raw}"])}
        data = apply_overrides(data, plain)
    except ConfigError as exc:
        raise SpecError(exc.problems) from None
    if "name" not in data:
        data["name"] = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).stem)
    return validate_spec(data)
