"""The sweep spec's reference and JSON Schema, generated from the pydantic models in ``sweep.spec``, so
the docs and editors accept exactly what ``sweep validate`` accepts.

    python -m sweep.spec_docs            # writes docs/spec.md and docs/spec.schema.json (make docs)
    python -m sweep.spec_docs --check    # exit 1 when either file is stale

The schema is ``SweepSpec.model_json_schema()`` with what ``load_spec`` adds to the model written in:
``trial`` is a trial config (the model keeps it a mapping and validates it per trial), ``name`` may be
left out (the file's name is used), a pruner or sampler without ``kind`` is the default kind, the keys
of ``space`` are trial field paths, and a data column may be named by its position (``text_column: 1``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from sweep.spec import TRIAL_PATHS, SweepSpec
from trainers.config import TrialConfig

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMA_FILE, REFERENCE_FILE = "spec.schema.json", "spec.md"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

_POSITION_VALIDATOR = "trainers.config._position"
"""The before-validator of a data column: an int names a column of a headerless file by position."""

SECTION_NOTES = {
    "name": "The sweep's name: its MLflow experiment, its run dirs (runs/NAME/TIME) and its Optuna study.",
    "description": "Free text, shown on the sweep's MLflow run.",
    "trial": "The trial template: what every trial starts from before its sampled parameters are set.",
    "space": "The search space, at least one parameter: each key is a trial field's dotted path (`optim.learning_rate`), each value "
    "one parameter.",
    "objective": "What the search optimizes: a metric every trial reports.",
    "sampler": "How Optuna picks the next configuration.",
    "pruner": "How trials are stopped early; a trial's last report is never pruned.",
    "budget": "How many trials, how many at once, and how long.",
    "resources": "Ray's resource request for each trial.",
    "tracking": "Where the MLflow record goes.",
    "execution": "Where the sweep runs and what it keeps.",
    "acceptance": "When the verdict accepts the best model.",
    "verdict": "The verdict's confirmation trials.",
    "warm_start": "Start from an earlier sweep's trials.",
}
"""A line for each top-level key whose model field has no description of its own."""


class _SpecSchema(GenerateJsonSchema):
    """pydantic's generator, but defaults made by a factory are shown, and a before-validator's schema
    says what it accepts, where we know it."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return super().get_default_value(schema)

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        fn = schema["function"]["function"]
        if f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}" == _POSITION_VALIDATOR:
            return {**inner, "type": ["string", "integer"]}
        return inner


def spec_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a sweep spec YAML file."""
    schema = SweepSpec.model_json_schema(schema_generator=_SpecSchema)
    trial = TrialConfig.model_json_schema(schema_generator=_SpecSchema)
    defs: dict[str, Any] = schema["$defs"]
    clash = sorted(set(defs) & (set(trial["$defs"]) | {"TrialConfig"}))
    assert not clash, f"spec and trial models share names: {clash}"
    defs.update(trial.pop("$defs"))
    defs["TrialConfig"] = trial
    props = schema["properties"]
    props["trial"] = {"$ref": "#/$defs/TrialConfig", "default": {}, "description": props["trial"]["description"]}
    # load_spec: the name defaults to the file's stem; a sweep without a parameter is refused
    schema["required"] = [*(r for r in schema.get("required", []) if r != "name"), "space"]
    props["space"].pop("default", None)
    props["space"]["minProperties"] = 1
    props["name"]["description"] = f"{SECTION_NOTES['name']} Default: the file's name without .yaml."
    props["space"]["propertyNames"] = {"enum": sorted(TRIAL_PATHS)}
    for key in ("pruner", "sampler"):  # SweepSpec._default_kinds: no kind = the default's kind
        default_kind = SweepSpec.model_fields[key].default.kind
        for member in props[key]["oneOf"]:
            name = member["$ref"].rsplit("/", 1)[-1]
            if defs[name]["properties"]["kind"]["const"] != default_kind:
                defs[name]["required"] = ["kind", *defs[name].get("required", [])]
    for key, note in SECTION_NOTES.items():
        props[key].setdefault("description", note)
    return {
        "$schema": DRAFT,
        "title": "finetune-sweep sweep spec",
        "description": "One YAML file is a whole sweep (`sweep validate FILE` checks it). Generated by "
        "`python -m sweep.spec_docs` from sweep/spec.py.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


# --- the reference ------------------------------------------------------------------------------


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    return root["$defs"][ref.rsplit("/", 1)[-1]] if ref else schema


def _bounds(s: Mapping[str, Any]) -> str:
    ops = (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤"))
    parts = [f"{op} {s[key]:g}" for key, op in ops if key in s]
    if "pattern" in s:
        parts.append(f"matching `{s['pattern']}`")
    return f" {', '.join(parts)}" if parts else ""


_SCALARS = frozenset({"boolean", "integer", "number", "string"})

_TYPE_NAMES = {
    "integer": "integer",
    "number": "number",
    "string": "string",
    "boolean": "true / false",
    "null": "null",
    "object": "mapping",
    "scalar": "scalar",
}


def _type(s: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """A field's type in words, constraints included: ``integer > 0 or null``."""
    if "$ref" in s:
        return "section"
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    if "enum" in s:
        return " / ".join(f"`{json.dumps(v)}`" for v in s["enum"])
    if "oneOf" in s:
        tag = s.get("discriminator", {}).get("propertyName", "kind")
        return f"one of the {tag}s below"
    if "anyOf" in s:
        simple = {m.get("type") for m in s["anyOf"] if set(m) == {"type"}}
        if simple >= _SCALARS:  # space's Scalar: any YAML value but a list or a mapping
            members = [{"type": "scalar"}, *(m for m in s["anyOf"] if m.get("type") not in _SCALARS | {"null"})]
            return " or ".join(dict.fromkeys(_type(m, root) for m in members))
        return " or ".join(dict.fromkeys(_type(m, root) for m in s["anyOf"]))
    kind = s.get("type")
    if isinstance(kind, list):
        return " or ".join(_TYPE_NAMES.get(str(k), str(k)) for k in kind)
    if kind == "array":
        return f"list of {_type(s['items'], root)}" if s.get("items") else "list"
    if kind == "object" and isinstance(s.get("additionalProperties"), Mapping):
        return f"mapping to {_type(s['additionalProperties'], root)}"
    if kind is None:
        return "any"
    return f"{_TYPE_NAMES.get(kind, kind)}{_bounds(s)}"


def _default(name: str, s: Mapping[str, Any], required: Sequence[str]) -> str:
    if "default" not in s:
        return "**required**" if name in required else ""
    value = s["default"]
    if isinstance(value, dict):
        return "see below" if value else "`{}`"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(obj: Mapping[str, Any], root: Mapping[str, Any], skip: str = "") -> list[str]:
    props: Mapping[str, Any] = obj.get("properties", {})
    required = obj.get("required", [])
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, s in props.items():
        if name == skip:
            continue
        description = s.get("description") or _resolve(s, root).get("description", "")
        rows.append(f"| `{name}` | {_cell(_type(s, root))} | {_default(name, s, required)} | {_cell(description)} |")
    return rows


def _sections(path: str, obj: Mapping[str, Any], root: Mapping[str, Any], level: int) -> Iterator[str]:
    """The sections below ``obj``: one per nested section, one per kind of a tagged union."""
    for name, s in obj.get("properties", {}).items():
        at = f"{path}.{name}" if path else name
        yield from _section(at, s, root, level)


def _section(at: str, s: Mapping[str, Any], root: Mapping[str, Any], level: int) -> Iterator[str]:
    hashes = "#" * level
    union = s.get("oneOf") or (s.get("additionalProperties") or {}).get("oneOf")
    if union:
        tag = (s.get("discriminator") or s["additionalProperties"]["discriminator"])["propertyName"]
        yield f"{hashes} {at}"
        yield ""
        if s.get("description"):
            yield _cell(s["description"])
            yield ""
        for member in union:
            body = _resolve(member, root)
            kind = body["properties"][tag]["const"]
            yield f"{hashes}# {at}: {tag} `{kind}`"
            yield ""
            if body.get("description"):
                yield _cell(body["description"])
                yield ""
            if len(body["properties"]) > 1:
                yield from _table(body, root, skip=tag)
                yield ""
        return
    refs = [m for m in s.get("anyOf", []) if "$ref" in m]  # an optional section: section or null
    body = _resolve(refs[0] if len(refs) == 1 else s, root)
    if body is s or body.get("type") != "object":
        return
    yield f"{hashes} {at}"
    yield ""
    description = s.get("description") or body.get("description")
    if description:
        yield _cell(description)
        yield ""
    yield from _table(body, root)
    yield ""
    yield from _sections(at, body, root, level + 1)


def spec_reference(schema: Mapping[str, Any]) -> str:
    """docs/spec.md: every section and field of a sweep spec, from ``schema``."""
    lines = [
        "# Sweep spec reference",
        "",
        "<!-- generated by `python -m sweep.spec_docs` (`make docs`) from sweep/spec.py: do not edit -->",
        "",
        "One YAML file is a whole sweep. Start from a file in `search_spaces/` and check yours with",
        "`sweep validate FILE` (it reports every problem at once, each with its fix). Any key can be set on",
        "the command line too: `sweep run FILE budget.num_trials=20 trial.optim.max_steps=80`.",
        f"Editors validate and complete these files with the JSON Schema [{SCHEMA_FILE}]({SCHEMA_FILE}).",
        "A scalar is a number, a string, true / false or null; in the descriptions, None is YAML's `null`.",
        "",
        "## Top level",
        "",
        *_table(schema, schema),
        "",
        *_sections("", schema, schema, 2),
    ]
    return "\n".join(lines).rstrip() + "\n"


def rendered() -> dict[str, str]:
    """File name (in docs/) -> its generated text."""
    schema = spec_schema()
    return {
        SCHEMA_FILE: json.dumps(schema, indent=2, ensure_ascii=False) + "\n",
        REFERENCE_FILE: spec_reference(schema),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the sweep spec's reference and JSON Schema into docs/.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    parser.add_argument("--out", type=Path, default=DOCS, help="the docs directory (default: the project's docs/)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "stale (run `make docs`)" if args.check else "written"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
