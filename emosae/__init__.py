"""emosae: emotion concepts in language models, found with linear probes and sparse
autoencoders, and exposed as steering handles through TransformerLens hooks.

The package is cut by concern (see docs/architecture.md): `core` (errors, atomic IO,
layout, logging), `lm` (models, chat, hooks), `data`, `sae` (cache, training),
`probes`, `features`, `steering`, `reading`, `experiments`, `pipeline` (`emosae run`) and `cli`.
Heavy modules (torch models, sae-lens, wandb) are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "emosae.lm.models",
    "list_models": "emosae.lm.models",
    "render_chat": "emosae.lm.chat",
    "chat_reply": "emosae.lm.chat",
    "EmosaeError": "emosae.core.errors",
    "SteeringVector": "emosae.steering.vector",
    "load_directions": "emosae.steering.directions",
    "read": "emosae.reading.trace",
    "Reading": "emosae.reading.trace",
    "load_concept_set": "emosae.data.concepts",
    "RunConfig": "emosae.pipeline.config",
    "preset": "emosae.pipeline.config",
    "run_pipeline": "emosae.pipeline.runner",
    "CacheJob": "emosae.sae.cache",
    "cache_activations": "emosae.sae.cache",
    "TrainJob": "emosae.sae.config",
    "train_sae": "emosae.sae.training",
    "load_sae": "emosae.sae.training",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emosae' has no attribute {name!r}")
