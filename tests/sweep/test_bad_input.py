"""Bad input never crashes, as a property: generated malformed specs (wrong types at every level,
missing and empty sections, unknown keys, values out of range, conditions that cannot hold) and
malformed data files (binary, wrong encoding, ragged rows, empty, one class, too few rows) given to
`sweep run` end with exit 0 or 2; with 2, one `error:` line per problem, no traceback, and no run
directory or MLflow record created. An accepted spec stops where the sweep would create its run
directory (nothing here starts Ray)."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sweep import cli
from sweep.run import startup

ROWS = [(f"review number {i} was {'great' if i % 2 else 'awful'}", "pos" if i % 2 else "neg") for i in range(40)]
GOOD_CSV = "text,label\n" + "".join(f"{t},{label}\n" for t, label in ROWS)

BASE: dict[str, Any] = {
    "name": "prop",
    "trial": {
        "model": {"name_or_path": "tiny-bert"},
        "adaptation": {"method": "full"},
        "data": {"path": "data.csv", "max_length": 16},
        "split": {"val_fraction": 0.25, "seed": 0},
        "optim": {"max_steps": 4, "batch_size": 4},
        "eval": {"eval_every_steps": 2},
    },
    "space": {
        "optim.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "loss.name": {"type": "categorical", "choices": ["cross_entropy", "focal"]},
        "loss.gamma": {"type": "float", "low": 1.0, "high": 3.0, "when": {"loss.name": "focal"}},
        "model.num_layers": {"type": "int", "low": 1, "high": 2},
    },
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "sampler": {"kind": "tpe", "seed": 0},
    "pruner": {"kind": "median", "warmup_steps": 2},
    "budget": {"num_trials": 2, "max_concurrent_trials": 1},
    "acceptance": {"threshold": 0.6},
    "execution": {"runs_dir": "runs", "dashboard": False},
}


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    return out


PATHS = _paths(BASE)

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-2, 5), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(-2, 5), max_size=2),
    st.sampled_from([0, -1, 0.0, 1.5, "", [], {}, 1e-30, 1e30, "focal", "median", "grid", "minimize"]),
)


@st.composite
def mutation(draw: Any) -> tuple[str, tuple[str, ...], Any]:
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "unknown", "empty", "when"]))
    path = draw(st.sampled_from(PATHS))
    if kind == "set":
        return kind, path, draw(junk)
    if kind == "unknown":
        return kind, path, draw(st.text(min_size=1, max_size=8))
    if kind == "when":  # a condition on a value the parent never takes, or on a parameter that is not there
        parent = draw(st.sampled_from(["loss.name", "model.num_layers", "optim.learning_rate", "nope"]))
        return kind, ("space", "loss.gamma", "when"), {parent: draw(junk)}
    return kind, path, None


def _apply(spec: dict[str, Any], change: tuple[str, tuple[str, ...], Any]) -> None:
    kind, path, value = change
    node: Any = spec
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return  # an earlier change replaced this part of the spec
        node = node[key]
    if not isinstance(node, dict):
        return
    last = path[-1]
    if kind in ("set", "when"):
        node[last] = value
    elif kind == "delete":
        node.pop(last, None)
    elif kind == "empty":
        node[last] = {} if isinstance(node.get(last), dict) else []
    elif kind == "unknown" and isinstance(node.get(last), dict):
        node[last][value] = 1


DATA = {
    "binary": b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + bytes(range(256)),
    "latin-1": ("text,label\n" + "".join(f"caf\xe9 {t},{label}\n" for t, label in ROWS)).encode("latin-1"),
    "utf-16": GOOD_CSV.encode("utf-16"),
    "ragged": (GOOD_CSV + "only one field\nthree,fields,here,and,more\n").encode(),
    "empty": b"",
    "header only": b"text,label\n",
    "one class": ("text,label\n" + "".join(f"{t},pos\n" for t, _ in ROWS)).encode(),
    "too few rows": b"text,label\nfine,pos\nbad,neg\n",
    "one row of a class": (GOOD_CSV + "lonely,maybe\n").encode(),
    "wrong columns": GOOD_CSV.replace("text,label", "sentence,target").encode(),
    "no header": "".join(f"{label}\t{t}\n" for t, label in ROWS).encode(),
    "empty texts": ("text,label\n" + "".join(f",{label}\n" for _, label in ROWS)).encode(),
    "good": GOOD_CSV.encode(),
}

SPEC_FILES = {  # the spec file itself
    "empty": b"",
    "list": b"- a\n- b\n",
    "scalar": b"42\n",
    "bad yaml": b"name: [unclosed\n  trial: {\n",
    "binary": b"\x00\x01\xff\xfe" * 8,
    "latin-1": "name: caf\xe9\n".encode("latin-1"),
}


def _run(tmp: Path, spec_bytes: bytes, data: bytes, overrides: list[str]) -> tuple[int, str]:
    (tmp / "data.csv").write_bytes(data)
    (tmp / "spec.yaml").write_bytes(spec_bytes)

    class Accepted(BaseException):  # past every check: not an error the CLI would report
        pass

    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with (
            mock.patch.object(startup, "new_run_dir", side_effect=Accepted),
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(out),
        ):
            try:
                code = cli.main(["run", "spec.yaml", *overrides])
            except Accepted:
                code = 0
    finally:
        os.chdir(cwd)
    return code, err.getvalue()


def _check(tmp: Path, code: int, stderr: str) -> None:
    assert code in (0, 2), stderr
    assert "Traceback" not in stderr
    if code == 2:
        lines = stderr.strip().splitlines()
        assert lines and all(line.startswith("error: ") and len(line) > 12 for line in lines), stderr
        # nothing started, written or recorded
        assert not (tmp / "runs").exists()
        assert not list(tmp.rglob("*.db")) and not (tmp / "mlruns").exists()


SETTINGS = settings(
    max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
SEEN: dict[str, int] = {"0": 0, "2": 0}  # exit codes the examples got: both must occur


@SETTINGS
@example(changes=[], data="good", overrides=[])  # the spec as it is: past every check
@example(changes=[], data="good", overrides=["trial.optim.max_steps=8"])
@given(
    changes=st.lists(mutation(), min_size=1, max_size=3),
    data=st.sampled_from(sorted(DATA)),
    overrides=st.lists(
        st.sampled_from(
            [
                "budget.num_trials=0",
                "budget.num_trials=x",
                "trial.optim.max_steps=-1",
                "space.loss.name.choices=[]",
                "nokey",
                "=1",
                "split.test_fraction=0.1",
                "trial.split.test_fraction=0.1",
                "pruner.kind=asha",
            ]
        ),
        max_size=2,
    ),
)
def _malformed_spec_and_data(changes, data, overrides):
    spec = copy.deepcopy(BASE)
    for change in changes:
        _apply(spec, change)
    with tempfile.TemporaryDirectory() as tmp:
        code, stderr = _run(Path(tmp), yaml.safe_dump(spec, sort_keys=False).encode(), DATA[data], overrides)
        _check(Path(tmp), code, stderr)
        SEEN[str(code)] += 1


def test_malformed_specs_and_data_exit_0_or_2_without_a_trace():
    SEEN.update({"0": 0, "2": 0})
    _malformed_spec_and_data()
    # the examples reach both sides: specs past every check, and specs the checks refuse
    assert SEEN["0"] > 0 and SEEN["2"] > 0, SEEN


def test_each_malformed_data_file_is_one_line_naming_the_file():
    for name, content in DATA.items():
        with tempfile.TemporaryDirectory() as tmp:
            code, stderr = _run(Path(tmp), yaml.safe_dump(BASE, sort_keys=False).encode(), content, [])
            _check(Path(tmp), code, stderr)
            if name == "good":
                assert code == 0, stderr
            else:
                assert code == 2, name
                assert "data" in stderr, (name, stderr)


def test_each_malformed_spec_file_is_one_line():
    for name, content in SPEC_FILES.items():
        with tempfile.TemporaryDirectory() as tmp:
            code, stderr = _run(Path(tmp), content, DATA["good"], [])
            _check(Path(tmp), code, stderr)
            assert code == 2 and "spec.yaml" in stderr, (name, stderr)


def test_the_named_cases_say_what_to_fix(tmp_path):
    def run(spec: dict[str, Any], *overrides: str) -> str:
        code, stderr = _run(tmp_path, yaml.safe_dump(spec, sort_keys=False).encode(), DATA["good"], list(overrides))
        assert code == 2, stderr
        return stderr

    wrong_section = {**BASE, "budget": [1, 2]}
    assert run(wrong_section).strip() == (
        "error: budget: [1, 2] must be a mapping (indented key: value lines), not a list"
    )
    never = copy.deepcopy(BASE)
    never["space"]["loss.gamma"]["when"] = {"loss.name": "hinge"}
    assert "space.loss.gamma.when: loss.name = 'hinge' can never hold" in run(never)
    no_space = {k: v for k, v in BASE.items() if k != "space"}
    assert "space: missing or empty" in run(no_space)
    assert "did you mean trial.split.test_fraction" in run(BASE, "split.test_fraction=0.1")
    (tmp_path / "adir").mkdir()
    code, stderr = _run(tmp_path, b"", DATA["good"], [])
    assert code == 2 and "is empty" in stderr
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli.main(["run", str(tmp_path / "adir")]) == 2
    assert "is a directory" in err.getvalue()
