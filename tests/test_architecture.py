"""The package's boundaries, read from the source: no import cycles, each heavy dependency in its home,
private names of dependencies only in a guarded compat module, modules of one concept (not too long)."""

import ast
import graphlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
PACKAGES = ("sweep", "trainers")
MAX_LINES = 400
LONGER = {  # one concept that needs more lines, and why
    "sweep/findings.py": "the permutation test, its windows, Holm's step-down and the stratified re-tests",
    "sweep/tracking.py": "the one home of mlflow: the sweep's record, the registry, reading runs back",
    "sweep/optuna_study.py": "the one home of the study: opening it, the bridge Ray's searcher and scheduler share",
}
HOMES = {  # a heavy dependency -> the only modules that may import it
    "ray": ("sweep/ray/",),
    "optuna": (
        "sweep/optuna_study.py",
        "sweep/optuna_samplers.py",
        "sweep/optuna_dashboard.py",
        "sweep/pruners.py",  # inside the methods that build a pruner: importing the spec imports no optuna
        "sweep/samplers.py",  # (the same for a sampler)
    ),
    "mlflow": ("sweep/tracking.py",),
    "torch": ("trainers/",),
    "transformers": ("trainers/",),
    "peft": ("trainers/",),
}
PRIVATE = re.compile(r"\b(ray\._private|ray\._raylet|torch\._[a-z]|mlflow\.[a-z_.]*\._[a-z]|optuna\._[a-z])")
COMPAT = ("sweep/ray/_compat.py", "trainers/_compat.py")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            out[name] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module imported (top level or in functions; not for type checking only), with its line."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_no_import_cycle_inside_the_packages():
    modules = _modules()
    graph = {
        name: {target for target, _ in _imports(name, path) if target in modules and target != name}
        for name, path in modules.items()
    }
    # a package's __init__ re-exporting its own modules is not a cycle through the package
    for name in graph:
        graph[name] = {t for t in graph[name] if not (t in modules and name.startswith(t + "."))}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize("dependency", sorted(HOMES))
def test_each_heavy_dependency_is_imported_only_in_its_home(dependency):
    outside = [
        f"{path.relative_to(REPO)}:{line}"
        for name, path in _modules().items()
        for target, line in _imports(name, path)
        if target.split(".")[0] == dependency and not str(path.relative_to(REPO)).startswith(HOMES[dependency])
    ]
    assert not outside, f"{dependency} imported outside {HOMES[dependency]}: {outside}"


def test_private_names_of_dependencies_only_in_the_compat_modules():
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _modules().values()
        if str(path.relative_to(REPO)) not in COMPAT
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, found


def test_modules_hold_one_concept():
    long = {
        str(path.relative_to(REPO)): n
        for path in _modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and str(path.relative_to(REPO)) not in LONGER
    }
    assert not long, f"over {MAX_LINES} lines (split by concept, or say why in LONGER): {long}"
