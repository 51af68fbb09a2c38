"""How trainers/ is layered: no import cycles, and the modules the sweep imports stay torch-free."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

TRAINERS = Path(__file__).parents[2] / "trainers"


def _module(path: Path) -> str:
    parts = path.relative_to(TRAINERS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_of_trainers_imports_one_that_imports_it_back():
    """Every import counts: at the top, inside a function, or for type checking only."""
    modules = {_module(p): p for p in TRAINERS.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        named = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                named |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {m for m in named if m in modules and m != name and not name.startswith(f"{m}.")}
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError naming the cycle


def test_the_task_registry_and_the_config_import_no_torch():
    """The sweep imports both (its spec checks tasks, losses and metrics); it never imports torch."""
    code = (
        "import sys, trainers.tasks, trainers.config; "
        "print(sorted({'torch', 'transformers', 'peft', 'sklearn'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]"]
