"""simcse_hub: SimCSE sentence embeddings for the Hugging Face ecosystem.

Importing the package registers ``SimCSEConfig``/``SimCSEModel`` with ``AutoConfig``/``AutoModel``, so saved SimCSE
models load with ``AutoModel.from_pretrained(path)`` without ``trust_remote_code``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from transformers import AutoConfig, AutoModel


def _map_checkout_folders() -> None:
    """In a source checkout used without installing (``PYTHONPATH=.``, or ``python`` started in the checkout next to
    a non-editable install), ``modeling/`` and ``demo/`` sit beside this package rather than in it (setup.py maps
    them to ``simcse_hub.modeling`` and ``simcse_hub.demo``): import them from there."""
    checkout = Path(__file__).resolve().parent.parent
    for name in ("modeling", "demo"):
        folder = checkout / name
        if importlib.util.find_spec(f"{__name__}.{name}") is not None or not (folder / "__init__.py").is_file():
            continue
        spec = importlib.util.spec_from_file_location(f"{__name__}.{name}", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        globals()[name] = module


_map_checkout_folders()

from simcse_hub.modeling.configuration_simcse import POOLER_TYPES, SimCSEConfig  # noqa: E402
from simcse_hub.modeling.modeling_simcse import SimCSEModel, SimCSEModelOutput, info_nce  # noqa: E402

__version__ = "0.1.0"

AutoConfig.register(SimCSEConfig.model_type, SimCSEConfig, exist_ok=True)
AutoModel.register(SimCSEConfig, SimCSEModel, exist_ok=True)


def __getattr__(name: str):
    # Heavier pieces are imported on first use so that `import simcse_hub` stays quick.
    lazy = {
        "SimCSE": "simcse_hub.tool",
        "SimCSELoss": "simcse_hub.losses",
        "save_model": "simcse_hub.export",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'simcse_hub' has no attribute {name!r}")


__all__ = [
    "POOLER_TYPES",
    "SimCSE",
    "SimCSEConfig",
    "SimCSELoss",
    "SimCSEModel",
    "SimCSEModelOutput",
    "__version__",
    "info_nce",
    "save_model",
]
