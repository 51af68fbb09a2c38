"""The search-space grammar: float / int / categorical / fixed parameters, each addressing a trial
field by dotted path, optionally conditional on other parameters (``when``).

Sampling is define-by-run against anything with Optuna's ``suggest_*`` methods (an ``optuna.Trial``),
so conditional parameters are simply not asked for when their condition fails. No optuna import here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field

from trainers.settings import Section

Scalar = None | bool | int | float | str


class _Param(Section):
    when: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description="Sample only when every named parameter has this value (or one of these values)."
    )


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar]


class FixedParam(_Param):
    type: Literal["fixed"]
    value: Any


class TiedParam(_Param):
    """Not searched: follows another parameter, ``value = times * to + plus`` (e.g. LoRA alpha = 2 x r,
    so the adapter's scale alpha / r stays fixed while r is searched)."""

    type: Literal["tied"]
    to: str = Field(description="A numeric parameter listed earlier in the space.")
    times: float = 1.0
    plus: float = 0.0

    def value_for(self, parent: Any) -> int | float:
        value = self.times * parent + self.plus
        whole = isinstance(parent, int) and float(self.times).is_integer() and float(self.plus).is_integer()
        return round(value) if whole else float(value)


Param = Annotated[FloatParam | IntParam | CategoricalParam | FixedParam | TiedParam, Field(discriminator="type")]


class Suggester(Protocol):
    """What an ``optuna.Trial`` offers; the space samples through it."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def param_rules(path: str, p: Param) -> list[str]:
    """Optuna's rules for one parameter, as fix-it lines (Optuna itself would raise mid-sweep)."""
    at = f"space.{path}"
    problems = []
    if isinstance(p, FloatParam | IntParam):
        if p.low > p.high:
            problems.append(f"{at}.low: {p.low} > high {p.high}; low must be <= high")
        if p.log and p.low <= 0:
            problems.append(f"{at}.low: {p.low} with log: true must be > 0; use a positive low or log: false")
        if isinstance(p, IntParam) and p.log and p.step != 1:
            problems.append(f"{at}.step: {p.step} with log: true; step and log are exclusive, drop one")
        if isinstance(p, FloatParam) and p.log and p.step is not None:
            problems.append(f"{at}.step: {p.step} with log: true; step and log are exclusive, drop one")
        if p.step is not None and p.step <= 0:
            problems.append(f"{at}.step: {p.step} must be > 0")
    if isinstance(p, CategoricalParam) and not p.choices:
        problems.append(f"{at}.choices: [] is empty; list at least one choice")
    return problems


def can_take(p: Param, value: Any) -> bool:
    """Whether sampling ``p`` can give ``value`` (a ``when`` condition on any other value never holds)."""
    if isinstance(p, CategoricalParam):
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in p.choices)
    if isinstance(p, FixedParam):
        return bool(value == p.value)
    if isinstance(p, TiedParam):
        return _is_number(value)  # what the parent can give is checked where the parent is
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not p.low <= value <= p.high:
        return False
    if isinstance(p, IntParam):
        return float(value).is_integer() and (int(value) - p.low) % p.step == 0
    return p.step is None or abs(((value - p.low) / p.step) - round((value - p.low) / p.step)) < 1e-9


def describe(p: Param) -> str:
    """The values a parameter can take, for messages."""
    if isinstance(p, CategoricalParam):
        return f"one of {p.choices}"
    if isinstance(p, FixedParam):
        return f"only {p.value!r}"
    if isinstance(p, TiedParam):
        return f"{p.times:g} x {p.to} + {p.plus:g}"
    step = f" in steps of {p.step}" if p.step is not None and p.step != 1 else ""
    return f"{p.low} to {p.high}{step}"


def candidate_values(p: Param, space: Mapping[str, Param] | None = None) -> list[Any]:
    """Values worth checking against the trial schema before anything runs (a tied parameter's follow
    its parent's, found in ``space``)."""
    if isinstance(p, FloatParam | IntParam):
        return [p.low, p.high]
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if isinstance(p, TiedParam):
        parent = (space or {}).get(p.to)
        if parent is None or isinstance(parent, TiedParam):
            return []
        return [p.value_for(v) for v in candidate_values(parent, space) if _is_number(v)]
    return [p.value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _active(p: Param, sampled: Mapping[str, Any]) -> bool:
    for key, wanted in (p.when or {}).items():
        if key not in sampled:
            return False
        options = wanted if isinstance(wanted, list) else [wanted]
        if sampled[key] not in options:
            return False
    return True


def sample(space: Mapping[str, Param], suggester: Suggester) -> dict[str, Any]:
    """Sample one configuration (dotted path -> value), in the space's order."""
    out: dict[str, Any] = {}
    for path, p in space.items():
        if not _active(p, out):
            continue
        if isinstance(p, FloatParam):
            out[path] = suggester.suggest_float(path, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, IntParam):
            out[path] = suggester.suggest_int(path, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, CategoricalParam):
            out[path] = suggester.suggest_categorical(path, p.choices)
        elif isinstance(p, TiedParam):
            if p.to in out:  # a parent that was not sampled (its condition failed) leaves it out too
                out[path] = p.value_for(out[p.to])
        else:
            out[path] = p.value
    return out


def is_conditional(space: Mapping[str, Param]) -> bool:
    return any(p.when for p in space.values())


def as_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Nest ``{"optim.learning_rate": 1e-3}`` into ``{"optim": {"learning_rate": 1e-3}}``."""
    nested: dict[str, Any] = {}
    for path, value in params.items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def compose(template: Mapping[str, Any], params: Mapping[str, Any], output_dir: str | None = None) -> dict[str, Any]:
    """One trial's config (as a dict): the template, its sampled parameters, and where to save its model."""
    config = merge(template, as_overrides(params))
    if output_dir is not None:
        config["output_dir"] = output_dir
    return config


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def grid_points(space: Mapping[str, Param]) -> dict[str, list[Any]]:
    """Each parameter with finitely many values, and its values."""
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
