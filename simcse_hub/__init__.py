"""simcse_hub: SimCSE sentence embeddings for the Hugging Face ecosystem.

Importing the package registers ``SimCSEConfig``/``SimCSEModel`` with ``AutoConfig``/``AutoModel``, so saved SimCSE
models load with ``AutoModel.from_pretrained(path)`` without ``trust_remote_code``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel

from simcse_hub.modeling.configuration_simcse import POOLER_TYPES, SimCSEConfig
from simcse_hub.modeling.modeling_simcse import SimCSEModel, SimCSEModelOutput, info_nce

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
