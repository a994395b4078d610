"""The house stays one house: no import cycle among simcse_hub's modules (their module-level imports, which Python
runs at import time; an import inside a function is deferred work)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simcse_hub"
MODULES = sorted(f"simcse_hub.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def module_imports(name: str, among: list[str] = MODULES) -> set[str]:
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
        found |= {target for target in targets if target in among}
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


# Whichever module of simcse_hub a program imports first, AutoModel must know SimCSEModel afterwards: the package's
# import hook registers it once transformers' auto classes are loaded, and the remote code's modules (which reach those
# classes themselves) must not be mid-import then. A failure here is silent for users: transformers swallows the
# ImportError of a registration cycle, and a saved model then asks for trust_remote_code.
REMOTE_CODE = sorted(f"simcse_hub.modeling.{path.stem}" for path in (PACKAGE.parent / "modeling").glob("*_simcse.py"))
# Those and the modules that import them at module level: the paths by which a first import reaches the remote code.
FIRST_IMPORTS = REMOTE_CODE + [name for name in MODULES if module_imports(name, REMOTE_CODE)]
CHECK_REGISTRATION = """
import importlib, sys
importlib.import_module(sys.argv[1])
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from simcse_hub.modeling.configuration_simcse import SimCSEConfig
print(MODEL_MAPPING[SimCSEConfig].__name__)
"""


def test_whichever_module_is_imported_first_automodel_knows_simcse():
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    def first_import(name: str) -> tuple[str, str]:
        run = subprocess.run([sys.executable, "-c", CHECK_REGISTRATION, name], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return name, (run.stdout.strip() or run.stderr.strip()).splitlines()[-1]

    assert {"simcse_hub.modeling.heads_simcse", "simcse_hub.train", "simcse_hub.losses"} <= set(FIRST_IMPORTS)
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = dict(pool.map(first_import, FIRST_IMPORTS))
    assert {name: last for name, last in outcomes.items() if last != "SimCSEModel"} == {}
