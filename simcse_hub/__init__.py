"""simcse_hub: SimCSE sentence embeddings for the Hugging Face ecosystem.

Importing the package registers ``SimCSEConfig`` / ``SimCSEModel`` with ``AutoConfig`` / ``AutoModel``, so a saved
SimCSE model loads with ``AutoModel.from_pretrained(path)`` without ``trust_remote_code``. The heavier public names
(the ``SimCSE`` tool, the loss, ``save_model``) are imported on first use.
"""

from __future__ import annotations

import importlib

from transformers import AutoConfig, AutoModel

from simcse_hub.modeling.configuration_simcse import POOLER_TYPES, SimCSEConfig
from simcse_hub.modeling.heads_simcse import info_nce
from simcse_hub.modeling.modeling_simcse import SimCSEModel, SimCSEModelOutput

__version__ = "0.2.0"


def register_auto_classes() -> None:
    """Register ``SimCSEConfig`` with ``AutoConfig`` and ``SimCSEModel`` with ``AutoModel`` (importing the package
    already did; idempotent)."""
    AutoConfig.register(SimCSEConfig.model_type, SimCSEConfig, exist_ok=True)
    AutoModel.register(SimCSEConfig, SimCSEModel, exist_ok=True)


register_auto_classes()

_LAZY = {"SimCSE": "simcse_hub.inference", "SimCSELoss": "simcse_hub.losses", "save_model": "simcse_hub.train"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simcse_hub' has no attribute {name!r}")


__all__ = ["POOLER_TYPES", "SimCSE", "SimCSEConfig", "SimCSELoss", "SimCSEModel", "SimCSEModelOutput", "__version__",
           "info_nce", "register_auto_classes", "save_model"]
