"""emosae: emotion concepts in language models, found with linear probes and sparse
autoencoders, and exposed as steering handles through TransformerLens hooks.

The package is cut by concern (see docs/architecture.md): `core` (errors, atomic IO,
layout, logging), `lm` (models, chat, hooks), `data`, `sae` (cache, training),
`probes`, `features`, `steering`, `reading`, `experiments`, `pipeline` (`emosae run`) and `cli`.
Heavy modules (torch models, sae-lens, wandb) are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
"""Moves with every change of a file format (stage keys and folder markers carry it)."""

_LAZY = {
    "load_model": "emosae.lm.models",
    "list_models": "emosae.lm.models",
    "render_chat": "emosae.lm.chat",
    "chat_reply": "emosae.lm.chat",
    "EmosaeError": "emosae.core.errors",
    "SteeringVector": "emosae.steering.vector",
    "load_directions": "emosae.steering.directions",
    "read": "emosae.reading.trace",
    "read_many": "emosae.reading.batch",
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
    "ProbeJob": "emosae.probes.vectors",
    "run_probe_job": "emosae.probes.vectors",
    "LabelConfig": "emosae.features.labels",
    "label_features": "emosae.features.labelling",
    "CalibrationConfig": "emosae.experiments.calibration",
    "calibrate": "emosae.experiments.calibration",
    "export_gguf": "emosae.steering.export",
}

if TYPE_CHECKING:  # what editors and type checkers see; mirrors _LAZY (tested)
    from emosae.core.errors import EmosaeError
    from emosae.data.concepts import load_concept_set
    from emosae.experiments.calibration import CalibrationConfig, calibrate
    from emosae.features.labelling import label_features
    from emosae.features.labels import LabelConfig
    from emosae.lm.chat import chat_reply, render_chat
    from emosae.lm.models import list_models, load_model
    from emosae.pipeline.config import RunConfig, preset
    from emosae.pipeline.runner import run_pipeline
    from emosae.probes.vectors import ProbeJob, run_probe_job
    from emosae.reading.batch import read_many
    from emosae.reading.trace import Reading, read
    from emosae.sae.cache import CacheJob, cache_activations
    from emosae.sae.config import TrainJob
    from emosae.sae.training import load_sae, train_sae
    from emosae.steering.directions import load_directions
    from emosae.steering.export import export_gguf
    from emosae.steering.vector import SteeringVector

__all__ = [
    "CacheJob",
    "CalibrationConfig",
    "EmosaeError",
    "LabelConfig",
    "ProbeJob",
    "Reading",
    "RunConfig",
    "SteeringVector",
    "TrainJob",
    "cache_activations",
    "calibrate",
    "chat_reply",
    "export_gguf",
    "label_features",
    "list_models",
    "load_concept_set",
    "load_directions",
    "load_model",
    "load_sae",
    "preset",
    "read",
    "read_many",
    "render_chat",
    "run_pipeline",
    "run_probe_job",
    "train_sae",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emosae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
