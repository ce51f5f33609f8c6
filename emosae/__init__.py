"""emosae: emotion concepts in language models, found with linear probes and sparse
autoencoders, and exposed as steering handles through TransformerLens hooks.

Heavy modules (torch models, sae-lens, wandb) are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "emosae.models",
    "list_models": "emosae.models",
    "render_chat": "emosae.chat",
    "chat_reply": "emosae.chat",
    "EmosaeError": "emosae.errors",
    "SteeringVector": "emosae.steering",
    "load_directions": "emosae.directions",
    "run_pipeline": "emosae.pipeline",
    "preset": "emosae.pipeline",
    "cache_activations": "emosae.activations",
    "train_sae": "emosae.training",
    "load_sae": "emosae.training",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emosae' has no attribute {name!r}")
