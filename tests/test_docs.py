"""The docs stay true: the spec reference and schema are what the models generate, every shipped spec
validates against the schema, and the README is a short guide whose links lead somewhere."""

import json
import re
from pathlib import Path

import jsonschema  # a dependency of Ray's, so always installed with the project
import pytest

from sweep import spec_docs
from sweep.errors import SpecError
from sweep.spec import load_spec
from trainers.config import read_yaml_file

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "search_spaces").glob("*.yaml"))
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "docs" / spec_docs.SCHEMA_FILE).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", [spec_docs.SCHEMA_FILE, spec_docs.REFERENCE_FILE])
def test_the_spec_reference_and_schema_are_what_the_models_generate(name):
    checked_in = (REPO / "docs" / name).read_text(encoding="utf-8")
    assert checked_in == spec_docs.rendered()[name], f"docs/{name} is stale: run `make docs`"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_validates_against_the_schema_it_names(path, validator):
    problems = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(read_yaml_file(path))
    ]
    assert problems == []
    modeline = MODELINE.search(path.read_text(encoding="utf-8"))
    assert modeline, f"{path.name}: no '# yaml-language-server: $schema=...' line for editors"
    assert (path.parent / modeline.group(1)).resolve() == REPO / "docs" / spec_docs.SCHEMA_FILE


SPACE = "space: {optim.learning_rate: {type: float, low: 1e-5, high: 1e-2, log: true}}\n"


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (SPACE, True),  # no name: load_spec names the sweep after its file
        (SPACE + "pruner: {warmup_steps: 20}\n", True),  # no kind: the default's (median)
        (SPACE + "sampler: {seed: 3}\n", True),
        (SPACE + "trial: {data: {header: false, text_column: 1, label_column: 0}}\n", True),  # by position
        (SPACE + "pruner: {p_threshold: 0.2}\n", False),  # a wilcoxon setting on the default kind
        (SPACE + "pruner: {kind: asha, warmup_steps: 20}\n", False),
        (SPACE + "trial: {optim: {lr: 0.1}}\n", False),
        ("space: {optim.lr: {type: float, low: 1e-5, high: 1e-2}}\n", False),
        ("space: {}\n", False),
        (SPACE + "budget: {num_trials: 0}\n", False),
    ],
)
def test_the_schema_accepts_what_load_spec_accepts(text, valid, tmp_path, validator):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert validator.is_valid(read_yaml_file(path)) is valid
    if valid:
        load_spec(path)
    else:
        with pytest.raises(SpecError):
            load_spec(path)


README = REPO / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_is_a_short_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move details into docs/"


@pytest.mark.parametrize("page", [README, *sorted((REPO / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_point_to_files_that_exist(page):
    targets = LINK.findall(page.read_text(encoding="utf-8"))
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in local if t and not (page.parent / t).exists()]
    assert missing == [], f"{page.name} links to files that do not exist"
