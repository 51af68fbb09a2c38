"""The trial config: one typed, torch-free schema that a sweep spec reuses as its trial template, and
how it is read (YAML, ``key=value`` overrides) and checked.

Strict pydantic v2: unknown keys are errors, no silent coercion ("5" is not 5). Every problem in a
config is collected and raised together as one ``ConfigError`` with one line per problem. The sections
(``trainers.settings``) are checked here against the task (``trainers.tasks``) they are for.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PositiveInt, ValidationError, model_validator

from trainers.errors import ConfigError
from trainers.settings import (
    AdaptationConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    Section,
    SplitConfig,
)
from trainers.tasks import TASKS


class TrialConfig(Section):
    """One trial: split the data, train with these meta-parameters, validate."""

    task: str = Field("classification", description=f"One of {list(TASKS)}.")
    seed: int = Field(0, description="Training seed (init, dropout, batch order).")
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    adaptation: AdaptationConfig = AdaptationConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    num_threads: PositiveInt | None = Field(None, description="torch CPU threads; None = torch's default.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Compute precision of forward passes (weights stay fp32): 'auto' = bf16 autocast on CUDA "
        "and on CPUs with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere.",
    )
    output_dir: str | None = Field(None, description="Save the trained model/adapter here.")

    @model_validator(mode="before")
    @classmethod
    def _task_default_loss(cls, data: Any) -> Any:
        """An unset ``loss.name`` is the task's first loss (regression has no cross-entropy)."""
        if isinstance(data, Mapping) and data.get("task") in TASKS:
            loss = data.get("loss")
            if loss is None or (isinstance(loss, Mapping) and "name" not in loss):
                data = {**data, "loss": {**(loss or {}), "name": TASKS[data["task"]].losses[0]}}
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrialConfig:
        problems = []
        task = TASKS.get(self.task)
        if task is None:
            raise ValueError(f"task: '{self.task}' is not a task; use one of {list(TASKS)}")
        if self.loss.name not in task.losses:
            problems.append(
                f"loss.name: '{self.loss.name}' does not fit task '{self.task}'; use one of {list(task.losses)}"
            )
        if self.eval.metric not in task.metrics:
            problems.append(
                f"eval.metric: '{self.eval.metric}' is not reported for {self.task}; use one of {list(task.metrics)}"
            )
        if self.optim.max_steps is None and self.optim.num_epochs is None:
            problems.append("optim.max_steps: null needs optim.num_epochs; set one of them")
        if self.split.val_fraction + self.split.test_fraction >= 1.0:
            problems.append(
                f"split.test_fraction: {self.split.test_fraction} + val_fraction "
                f"{self.split.val_fraction} >= 1 leaves no training data; lower them"
            )
        if self.model.head_hidden_sizes and not task.has_head:
            problems.append(f"model.head_hidden_sizes: a prediction head does not fit task '{self.task}'; remove it")
        if (
            self.model.num_layers is not None
            and self.model.num_trainable_layers is not None
            and self.model.num_trainable_layers > self.model.num_layers
        ):
            problems.append(
                f"model.num_trainable_layers: {self.model.num_trainable_layers} > model.num_layers "
                f"{self.model.num_layers}; it must be <= the kept layers"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


# --- loading ------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4`` and gives a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.\d*([eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+([eE][-+]?\d+)?|\.inf|\.nan)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML with scientific floats (``5e-4``) read as numbers."""
    return yaml.load(text, Loader=_YamlLoader)


def read_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; a missing file or a non-mapping is a ConfigError."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError([f"config: '{path}' is a directory; pass the path of a YAML file in it"])
    if not p.is_file():
        raise ConfigError([f"config: file '{path}' does not exist; pass the path of a YAML file"])
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config: '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML"]) from None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError([f"config: '{path}' is not valid YAML ({reason}); fix the syntax"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config: '{path}' must hold a mapping of keys, not {type(data).__name__}"])
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, returning a copy."""
    out = _deep_copy(data)
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"override: '{item}' is not key=value; write e.g. optim.learning_rate=1e-4")
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override: '{key}' goes through '{part}', which is not a section")
                break
            node = child
        else:
            try:
                node[parts[-1]] = parse_yaml(raw) if raw != "" else None
            except yaml.YAMLError:
                problems.append(f"override: value of '{key}' is not valid YAML ({raw!r}); quote or fix it")
    if problems:
        raise ConfigError(problems)
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


_RULES = {  # pydantic error type -> what the value must be, and how to fix it
    "dict_type": "must be a mapping (indented key: value lines), not {kind}",
    "model_type": "must be a mapping (indented key: value lines), not {kind}",
    "model_attributes_type": "must be a mapping (indented key: value lines), not {kind}",
    "list_type": "must be a list, e.g. [a, b]",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "missing": "is required; add it",
    "string_pattern_mismatch": "may hold only letters, digits, '_', '.' and '-', and start with a letter or digit",
    "finite_number": "must be a finite number",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


_MEMBER_NAMES = {"bool": "true/false", "int": "a whole number", "float": "a number", "str": "text", "none": "null"}
_SIMPLE_KEY = re.compile(r"^[\w.\-]+$")


def _kind_name(value: Any) -> str:
    names = {"NoneType": "null", "str": "text", "int": "a number", "float": "a number", "bool": "true/false"}
    return names.get(type(value).__name__, f"a {type(value).__name__}")


def _member(part: Any) -> str | None:
    """A smart union's member name in an error location (``bool``, ``list[...]``): not a field."""
    if not isinstance(part, str):
        return None
    if part in _MEMBER_NAMES:
        return _MEMBER_NAMES[part]
    if "[" in part:  # list[union[...]], function-after[...], ...
        return "a list" if part.startswith("list[") else "another form"
    return None


def format_validation_error(exc: ValidationError, prefix: str = "", tags: Collection[str] = ()) -> list[str]:
    """One fix-it line per problem, in our words: ``path: value must be ...``.

    ``tags`` are the discriminator values of tagged unions (a pruner's kind, a parameter's type): pydantic
    puts them in the location; we drop them from the path and name them where they matter. Errors of
    one value against each member of a plain union become one line."""
    lines: list[str] = []
    unions: dict[str, tuple[Any, list[str]]] = {}
    for err in exc.errors():
        parts: list[str] = []
        kinds: list[str] = []
        members: list[str] = []
        for part in err["loc"]:
            member = _member(part)
            if isinstance(part, str) and part in tags and not kinds:
                kinds.append(part)
            elif member is not None:
                members.append(member)
            else:
                text = str(part)
                parts.append(text if _SIMPLE_KEY.match(text) else repr(text))
        loc = ".".join(parts)
        path = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
        if members and kind != "extra_forbidden":
            unions.setdefault(path, (value, []))[1].extend(members)
            continue
        if kind == "extra_forbidden":
            if kinds:
                owner = path.rsplit(".", 1)[0]
                lines.append(
                    f"{path}: not a setting of {owner} kind {kinds[-1]!r}; remove it or choose a kind that has it"
                )
            else:
                lines.append(f"{path}: unknown key; remove it or check the spelling")
        elif kind == "value_error":
            # our own cross-field rules already carry their path and fix, one per line
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.extend(f"{prefix}{line}" for line in msg.splitlines())
        elif kind == "missing":
            lines.append(f"{path}: is required; add it")
        elif kind in _RULES:
            lines.append(f"{path}: {_shown(value)} {_RULES[kind].format(kind=_kind_name(value))}")
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
            bound = next(iter(ctx.values()), "")
            bound = f"{bound:g}" if isinstance(bound, float) else bound
            lines.append(f"{path}: {_shown(value)} must be {op} {bound}")
        elif kind == "literal_error":
            lines.append(f"{path}: {_shown(value)} must be one of {ctx.get('expected', '')}")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            field = str(ctx.get("discriminator", "kind")).strip("'")
            expected = ctx.get("expected_tags", "")
            if kind == "union_tag_not_found":
                lines.append(f"{path}.{field}: is required; set it to one of {expected}")
            else:
                lines.append(f"{path}.{field}: {_shown(ctx.get('tag'))} must be one of {expected}")
        else:
            lines.append(f"{path}: {_shown(value)} is invalid ({err['msg']}); fix the value")
    for path, (value, members) in unions.items():
        allowed = " or ".join(dict.fromkeys(members))
        lines.append(f"{path}: {_shown(value)} must be {allowed}")
    return lines


def trial_config_from_dict(data: Mapping[str, Any], prefix: str = "") -> TrialConfig:
    """Validate a plain dict as a TrialConfig; all problems are raised together as ConfigError."""
    try:
        return TrialConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from None


def load_trial_config(path: str | Path, overrides: Sequence[str] = ()) -> TrialConfig:
    """Load a trial config YAML and apply ``key=value`` overrides."""
    return trial_config_from_dict(apply_overrides(read_yaml_file(path), overrides))
