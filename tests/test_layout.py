"""The house stays one house: no circle of imports among simcse_hub's modules and the remote code, function-level
imports included (only ``if __name__ == "__main__":`` blocks, which run when a file is a script, are left out); and
whichever module a program imports first, AutoModel knows SimCSEModel afterwards."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = {f"simcse_hub.{path.stem}": path for path in (ROOT / "simcse_hub").glob("*.py") if path.stem != "__init__"}
FILES |= {f"simcse_hub.modeling.{path.stem}": path for path in (ROOT / "modeling").glob("*_simcse.py")}


def imports(name: str) -> set[str]:
    """The modules of :data:`FILES` that module ``name`` imports anywhere in its code (relative imports resolved)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "__main__" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    module = name.rsplit(".", child.level)[0] + (f".{module}" if module else "")
                found.update([module, *(f"{module}.{alias.name}" for alias in child.names)])
            visit(child)

    visit(ast.parse(FILES[name].read_text(encoding="utf-8")))
    return {module for module in found if module in FILES and module != name}


def test_no_import_cycle_function_level_imports_included():
    graph = {name: imports(name) for name in FILES}
    assert graph["simcse_hub.cli"] >= {"simcse_hub.train", "simcse_hub.tune"}  # the walk sees function-level imports
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for other in sorted(graph[name]):
            if state.get(other) == "visiting":
                pytest.fail("import cycle: " + " -> ".join([*path, name, other]))
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"

    for name in sorted(FILES):
        if name not in state:
            visit(name, [])


def test_the_remote_code_never_imports_simcse_hub():
    for name, path in FILES.items():
        if name.startswith("simcse_hub.modeling."):
            top = {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text())) if
                   isinstance(node, ast.ImportFrom) and node.module and not node.level}
            top |= {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Import) for alias in node.names}
            assert "simcse_hub" not in top, (name, top)  # it runs where simcse_hub is not installed


CHECK_REGISTRATION = """
import importlib, sys
importlib.import_module(sys.argv[1])
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING
print(MODEL_MAPPING[CONFIG_MAPPING["simcse"]].__name__)
"""


def test_whichever_module_is_imported_first_automodel_knows_simcse():
    """``import simcse_hub`` registers the Auto classes (no import hook): so does importing any of its modules."""

    def first_import(name: str) -> tuple[str, str]:
        run = subprocess.run([sys.executable, "-c", CHECK_REGISTRATION, name], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return name, (run.stdout.strip() or run.stderr.strip()).splitlines()[-1]

    names = ["simcse_hub", "simcse_hub.modeling.heads_simcse", "simcse_hub.losses", "simcse_hub.config",
             "simcse_hub.train"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = dict(pool.map(first_import, names))
    assert {name: last for name, last in outcomes.items() if last != "SimCSEModel"} == {}
    assert not any(type(finder).__module__.startswith("simcse_hub") for finder in sys.meta_path)
