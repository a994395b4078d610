"""simcse_hub: SimCSE sentence embeddings for the Hugging Face ecosystem.

Importing the package registers ``SimCSEConfig``/``SimCSEModel`` with ``AutoConfig``/``AutoModel``, so saved SimCSE
models load with ``AutoModel.from_pretrained(path)`` without ``trust_remote_code``.

The import itself is light (no torch, no transformers: ``simcse-hub --version`` answers at once). The registration
happens as soon as transformers' Auto classes exist: at once if they are already imported, else right after
transformers imports them (a one-shot import hook). The public names are imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading

__version__ = "0.1.0"

# The modules whose loading registers: transformers' Auto modules, and our model's (it imports AutoModel itself).
_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODEL_AUTO = "transformers.models.auto.modeling_auto"
# The remote code's modules (each ends with `__all__`): while one of them is being imported, registering would import
# the model's module in the middle of it, so registration waits until it is done.
_REMOTE_CODE = ("simcse_hub.modeling.configuration_simcse", "simcse_hub.modeling.modeling_simcse",
                "simcse_hub.modeling.heads_simcse", "simcse_hub.modeling.formats_simcse")
_registration = threading.RLock()
_registered: set[str] = set()


def _loaded(name: str, attribute: str) -> bool:
    """Whether module ``name`` is imported and done (a module being imported lacks its later names)."""
    return hasattr(sys.modules.get(name), attribute)


def _being_imported(name: str, attribute: str) -> bool:
    """Whether module ``name`` is being imported right now (it will register once done)."""
    return name in sys.modules and not _loaded(name, attribute)


def _register_loaded() -> None:
    """Register with whichever of AutoConfig and AutoModel transformers has loaded (each once; thread-safe)."""
    with _registration:
        if any(_being_imported(name, "__all__") for name in _REMOTE_CODE):
            return
        if "config" not in _registered and _loaded(_CONFIG_AUTO, "AutoConfig"):
            from transformers.models.auto.configuration_auto import AutoConfig

            from simcse_hub.modeling.configuration_simcse import SimCSEConfig

            AutoConfig.register(SimCSEConfig.model_type, SimCSEConfig, exist_ok=True)
            _registered.add("config")
        if "model" not in _registered and _loaded(_MODEL_AUTO, "AutoModel"):
            from transformers.models.auto.modeling_auto import AutoModel

            from simcse_hub.modeling.configuration_simcse import SimCSEConfig
            from simcse_hub.modeling.modeling_simcse import SimCSEModel

            AutoModel.register(SimCSEConfig, SimCSEModel, exist_ok=True)
            _registered.add("model")
        if len(_registered) == 2:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterWhenTransformersLoadsAuto)]


def register_auto_classes() -> None:
    """Register ``SimCSEConfig`` with ``AutoConfig`` and ``SimCSEModel`` with ``AutoModel`` now (idempotent)."""
    import transformers.models.auto.modeling_auto  # noqa: F401  (and configuration_auto with it)

    from simcse_hub.modeling import modeling_simcse  # noqa: F401

    _register_loaded()


class _RegisterWhenTransformersLoadsAuto(importlib.abc.MetaPathFinder):
    """Registers right after transformers has loaded AutoConfig, AutoModel, or a module of our remote code (the
    model's imports AutoModel; registration waits for the one being imported)."""

    def find_spec(self, name, path, target=None):
        if name not in (_CONFIG_AUTO, _MODEL_AUTO, *_REMOTE_CODE):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _register_loaded()


sys.meta_path.insert(0, _RegisterWhenTransformersLoadsAuto())
_register_loaded()  # transformers may have been imported first

_LAZY = {
    "POOLER_TYPES": "simcse_hub.modeling.configuration_simcse",
    "SimCSEConfig": "simcse_hub.modeling.configuration_simcse",
    "SimCSEModel": "simcse_hub.modeling.modeling_simcse",
    "SimCSEModelOutput": "simcse_hub.modeling.modeling_simcse",
    "info_nce": "simcse_hub.modeling.heads_simcse",
    "SimCSE": "simcse_hub.inference",
    "SimCSELoss": "simcse_hub.losses",
    "save_model": "simcse_hub.train",
}


def __getattr__(name: str):
    if name in _LAZY:
        register_auto_classes()
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simcse_hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "POOLER_TYPES",
    "SimCSE",
    "SimCSEConfig",
    "SimCSELoss",
    "SimCSEModel",
    "SimCSEModelOutput",
    "__version__",
    "info_nce",
    "register_auto_classes",
    "save_model",
]
