"""The house stays one house: no import cycle among simcse_hub's modules (their module-level imports, which Python
runs at import time; an import inside a function is deferred work)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simcse_hub"
MODULES = sorted(f"simcse_hub.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def module_imports(name: str) -> set[str]:
    """The simcse_hub modules that ``name`` imports at module level (imports inside functions are deferred work,
    not part of the import graph)."""
    tree = ast.parse((PACKAGE / f"{name.split('.')[-1]}.py").read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.If):  # `if __name__ == "__main__":` blocks run only as a script
            continue
        found |= {target for target in targets if target in MODULES}
    return found


def test_no_import_cycle():
    graph = {name: module_imports(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for other in sorted(graph[name]):
            if state.get(other) == "visiting":
                pytest.fail("import cycle: " + " -> ".join([*path, name, other]))
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [])


# The modules whose first import goes through the remote code. Importing transformers' auto classes registers
# SimCSEModel (simcse_hub's import hook), whose module imports its siblings: a module-level import of transformers'
# auto classes in a sibling would be a cycle that only shows when that module is the first one imported.
REMOTE_CODE = sorted(f"simcse_hub.modeling.{path.stem}" for path in (PACKAGE.parent / "modeling").glob("*_simcse.py"))
FIRST_IMPORTS = REMOTE_CODE + sorted(
    name for name in MODULES if "simcse_hub.modeling" in (PACKAGE / f"{name.split('.')[-1]}.py").read_text("utf-8")
)


def test_each_module_that_reaches_the_remote_code_imports_alone():
    import subprocess
    import sys

    assert {"simcse_hub.modeling.heads_simcse", "simcse_hub.losses"} <= set(FIRST_IMPORTS)
    processes = {name: subprocess.Popen([sys.executable, "-c", f"import {name}"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True) for name in FIRST_IMPORTS}
    failures = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=300)
        if process.returncode:
            failures[name] = output.strip().splitlines()[-1]
    assert not failures, failures
