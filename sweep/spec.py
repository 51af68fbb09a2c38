"""SweepSpec: one YAML file is a whole sweep. Validated once, all problems reported together."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from sweep.direction import Direction
from sweep.errors import SpecError
from sweep.pruners import MedianPruner, PrunerSpec
from sweep.samplers import SamplerSpec, TpeSampler
from sweep.space import Param, TiedParam, can_take, candidate_values, compose, describe, param_rules
from trainers.config import (
    TrialConfig,
    apply_overrides,
    format_validation_error,
    read_yaml_file,
    trial_config_from_dict,
)
from trainers.errors import ConfigError
from trainers.settings import Section
from trainers.tasks import TASKS


class Objective(Section):
    metric: str = Field("val_loss", description="A metric the trial reports, e.g. val_accuracy.")
    direction: Direction = Field(Direction.MINIMIZE, strict=False, description="Which way the metric is better.")


class Budget(Section):
    num_trials: PositiveInt = 10
    max_concurrent_trials: PositiveInt = 2
    time_budget_s: PositiveFloat | None = Field(None, description="Wall clock for the whole sweep.")
    trial_timeout_s: PositiveFloat | None = Field(
        None, description="Wall clock for one trial (each attempt); a trial past it is stopped as 'timeout'."
    )
    max_retries: NonNegativeInt = Field(
        1,
        description="Runs again of a trial that failed for a transient reason: its worker was lost, or it ran "
        "out of memory while other trials shared the device. Deterministic failures are never retried.",
    )


class Resources(Section):
    cpus_per_trial: PositiveFloat = 1.0
    gpus_per_trial: NonNegativeFloat = Field(
        0.0, description="Fractions (< 1) share one GPU between trials: 0.25 runs four on each GPU."
    )

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(
                f"resources.gpus_per_trial: {value:g} is neither a fraction of one GPU nor whole GPUs; "
                f"Ray gives a trial part of one GPU (< 1) or whole ones: write {value % 1:g} or {round(value):d}"
            )
        return value


class Tracking(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; None = $MLFLOW_TRACKING_URI or runs/mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; None = the spec's name.")


class Execution(Section):
    address: str | None = Field(None, description="Ray cluster address; None = a local Ray in the run dir.")
    dashboard: bool = Field(True, description="A local Ray's dashboard; false = headless (starts sooner).")
    storage: str | None = Field(None, description="Optuna storage URL; None = sqlite in the run dir.")
    runs_dir: str = Field("runs", description="Where run directories go, relative to the working directory.")
    save_best_model: bool = True
    verdict: bool = Field(True, description="Judge the sweep when it ends: verdict, blame, next_sweep.yaml.")

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("journal:") or re.match(r"^[a-z][a-z0-9+]*://", value)):
            raise ValueError(
                f"execution.storage: {value!r} is not a database URL; write e.g. sqlite:///study.db, "
                "postgresql://user@host/db or journal:/path/study.log"
            )
        return value

    @field_validator("address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is not None and not (value in ("local", "auto") or re.match(r"^([a-z]+://)?[\w.-]+:\d+/?$", value)):
            raise ValueError(
                f"execution.address: {value!r} is not a Ray address; write auto, local, HOST:6379 or ray://HOST:10001"
            )
        return value


class WarmStart(Section):
    from_run: str | None = Field(
        None,
        description="Run dir of an earlier sweep (runs/NAME/TIME): its finished trials whose parameters lie inside "
        "this space start this sweep's study, so the sampler and the pruner know them; they use none of the budget "
        "and are not this sweep's evidence. None = a cold start.",
    )


class SecondaryMetric(Section):
    metric: str = Field(description="Another metric the trial reports, e.g. val_f1_macro.")
    threshold: float
    direction: Direction = Field(Direction.MAXIMIZE, strict=False, description="Which way the metric is better.")


class Acceptance(Section):
    threshold: float | None = Field(None, description="Accept the best trial if its objective reaches this.")
    secondary: SecondaryMetric | None = Field(None, description="A second metric the best trial must also reach.")
    confirm_on_test: bool = Field(
        False, description="The best trial's held-out test score must reach the threshold too (needs a test split)."
    )
    model_name: str | None = Field(None, description="MLflow registered model name; None = the spec's name.")


class Verdict(Section):
    confirm_trials: NonNegativeInt | None = Field(
        None,
        description="Trials of budget.num_trials kept for confirmations: after the search, the best "
        "configuration runs again with one suspected parameter moved into the region its finding blames "
        "(same seed), so the verdict can say what that parameter does; slots no finding needs search on. "
        "None = 2 from 8 trials up, else 0; 0 = none.",
    )

    def num_confirm(self, num_trials: int) -> int:
        """How many of ``num_trials`` are kept for confirmations."""
        return (2 if num_trials >= 8 else 0) if self.confirm_trials is None else self.confirm_trials


class SweepSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    trial: dict[str, Any] = Field(default_factory=dict, description="The trial template (a TrialConfig).")
    space: dict[str, Param] = Field(default_factory=dict)
    objective: Objective = Objective()
    sampler: SamplerSpec = TpeSampler()
    pruner: PrunerSpec = MedianPruner()
    budget: Budget = Budget()
    resources: Resources = Resources()
    tracking: Tracking = Tracking()
    execution: Execution = Execution()
    acceptance: Acceptance = Acceptance()
    verdict: Verdict = Verdict()
    warm_start: WarmStart = WarmStart()

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        """``pruner: {warmup_steps: 20}`` means the default kind (median; tpe for the sampler)."""
        if isinstance(data, Mapping):
            for section, kind in (("pruner", "median"), ("sampler", "tpe")):
                value = data.get(section)
                if isinstance(value, Mapping) and "kind" not in value:
                    data = {**data, section: {"kind": kind, **value}}
        return data

    def stored(self, **dump: Any) -> dict[str, Any]:
        """The spec as the sweep stores and shows it: URL passwords masked (``sweep.credentials``)."""
        from sweep.credentials import mask

        out = self.model_dump(mode="json", **dump)
        for section, key in (("execution", "storage"), ("tracking", "uri")):
            if out.get(section, {}).get(key):
                out[section][key] = mask(out[section][key])
        return out

    def trial_template(self) -> dict[str, Any]:
        """The trial section with the objective and resources folded in (what every trial starts from)."""
        threads = max(1, int(self.resources.cpus_per_trial))
        fixed = {
            "eval.metric": self.objective.metric,
            "eval.direction": self.objective.direction,
            "num_threads": threads,
        }
        return compose(self.trial, fixed)

    def trial_config(self, params: Mapping[str, Any]) -> TrialConfig:
        """The TrialConfig of one trial: template + sampled parameters."""
        return trial_config_from_dict(compose(self.trial_template(), params))


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


PARAM_TYPES = ("float", "int", "categorical", "fixed", "tied")


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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(spec: SweepSpec) -> list[str]:
    """Rules that span sections; each line names the YAML path, the value and the fix."""
    problems: list[str] = []
    task = TASKS.get(str(spec.trial.get("task", "classification")))
    if task is not None and spec.objective.metric not in task.metrics:
        known = task.metrics
        problems.append(
            f"objective.metric: '{spec.objective.metric}' is not reported for {task.name}; use one of {list(known)}"
        )
        spec = spec.model_copy(update={"objective": Objective(metric=known[1], direction=spec.objective.direction)})
    pruned_on = getattr(spec.pruner, "metric", None)
    if task is not None and pruned_on is not None and pruned_on not in task.metrics:
        problems.append(
            f"pruner.metric: '{pruned_on}' is not reported for {task.name}; use one of {list(task.metrics)}"
        )
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
        for cond, wanted in (p.when or {}).items():
            if cond not in earlier:
                problems.append(
                    f"space.{path}.when: '{cond}' is not a parameter listed before '{path}'; "
                    f"list '{cond}' earlier in space"
                )
            elif not any(can_take(spec.space[cond], w) for w in (wanted if isinstance(wanted, list) else [wanted])):
                problems.append(
                    f"space.{path}.when: {cond} = {wanted!r} can never hold, so {path} would never be sampled; "
                    f"use a value {cond} can take ({describe(spec.space[cond])})"
                )
        if isinstance(p, TiedParam):
            parent = spec.space.get(p.to)
            if parent is None or p.to not in earlier:
                problems.append(
                    f"space.{path}.to: '{p.to}' is not a parameter listed before '{path}'; "
                    f"list '{p.to}' earlier in space, or tie to one that is"
                )
            elif isinstance(parent, TiedParam) or not all(_number(v) for v in candidate_values(parent, spec.space)):
                problems.append(
                    f"space.{path}.to: '{p.to}' takes {describe(parent)}; a tied parameter follows a numeric one "
                    f"(float, int, or numeric choices)"
                )
        for value in candidate_values(p, spec.space):
            try:
                spec.trial_config({path: value})
            except ConfigError as exc:
                detail = exc.problems[0].split(": ", 1)[-1]
                problems.append(f"space.{path}: value {value!r} does not fit the trial ({detail})")
        earlier.append(path)
    accept = spec.acceptance
    if task is not None and accept.secondary is not None and accept.secondary.metric not in task.metrics:
        problems.append(
            f"acceptance.secondary.metric: '{accept.secondary.metric}' is not reported for {task.name}; "
            f"use one of {list(task.metrics)}"
        )
    if accept.confirm_on_test and template.split.test_fraction == 0 and template.data.test_path is None:
        problems.append(
            "acceptance.confirm_on_test: true needs a held-out test part; set trial.split.test_fraction (e.g. 0.1) "
            "or trial.data.test_path"
        )
    elif accept.confirm_on_test and not spec.execution.save_best_model:
        problems.append(
            "acceptance.confirm_on_test: true evaluates the chosen model's saved weights on the test part; "
            "set execution.save_best_model: true"
        )
    elif accept.confirm_on_test and template.split.num_folds is not None:
        problems.append(
            "acceptance.confirm_on_test: k-fold trials are not scored on the test split; "
            "drop trial.split.num_folds or confirm_on_test"
        )
    confirm = spec.verdict.confirm_trials
    if confirm is not None and confirm >= spec.budget.num_trials:
        problems.append(
            f"verdict.confirm_trials: {confirm} leaves no trial to search with budget.num_trials "
            f"{spec.budget.num_trials}; lower it (e.g. 2) or raise budget.num_trials"
        )
    return problems + spec.pruner.problems(template, None) + spec.sampler.problems(spec.space)


_UNION_TAGS = frozenset(
    [*PARAM_TYPES]
    + [m.model_fields["kind"].default for m in get_args(get_args(SamplerSpec)[0])]
    + [m.model_fields["kind"].default for m in get_args(get_args(PrunerSpec)[0])]
)
"""Discriminator values pydantic puts in error locations (``pruner.median.x``): named, not pathed."""


def _trial_hint(line: str, data: Mapping[str, Any]) -> str:
    """``split: unknown key`` where ``split`` is a trial section (``sweep run SPEC split.test_fraction=0.1``)."""
    name, _, rest = line.partition(": ")
    if rest != "unknown key; remove it or check the spelling" or not any(p.startswith(f"{name}.") for p in TRIAL_PATHS):
        return line
    value = data.get(name)
    keys = [f"trial.{name}.{k}" for k in value] if isinstance(value, Mapping) else [f"trial.{name}"]
    return f"{name}: not a section of a sweep spec but of its trial; did you mean {', '.join(keys)}?"


def validate_spec(data: Mapping[str, Any]) -> SweepSpec:
    bad_types = _check_types(data)
    if bad_types:
        raise SpecError(bad_types)
    try:
        spec = SweepSpec.model_validate(dict(data))
    except ValidationError as exc:
        lines = format_validation_error(exc, tags=_UNION_TAGS)
        raise SpecError([_trial_hint(line, data) for line in lines]) from None
    problems = _check(spec)
    if problems:
        raise SpecError(problems)
    return spec


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a spec YAML, apply ``key=value`` overrides (``trial.optim.max_steps=10``), validate it."""
    try:
        data = read_yaml_file(path)
        if not data:
            raise ConfigError(
                [
                    f"spec: '{path}' is empty; a sweep needs at least a space (and a trial); start from search_spaces/demo.yaml"
                ]
            )
        space = data.get("space")
        if not space:
            raise ConfigError(
                [
                    "space: missing or empty; a sweep varies at least one trial field, e.g. "
                    "optim.learning_rate: {type: float, low: 1e-5, high: 1e-3, log: true}"
                ]
            )
        space_keys = sorted(space if isinstance(space, dict) else {}, key=len, reverse=True)
        plain = []
        for item in overrides:
            key, _, raw = item.partition("=")
            # space keys are dotted paths themselves: space.optim.learning_rate.high=1e-2
            target = next((k for k in space_keys if key.startswith(f"space.{k}.")), None)
            if target is None or not isinstance(data["space"][target], dict):
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
