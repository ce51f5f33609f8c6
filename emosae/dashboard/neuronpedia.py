"""Features in Neuronpedia's feature-upload shape: one JSON object per feature with
modelId, source (`<layer>-emosae-res-<d_sae>`, Neuronpedia's `<layer>-<set>-<width>`
convention), index, density, top_logits, bottom_logits, explanations (the label) and
activations (each a context's tokens and per-token values, top contexts first, then
the band samples). It does not upload anything."""

from __future__ import annotations

from typing import Any

from emosae.dashboard.data import FeatureData
from emosae.lm.hooks import hook_layer

KEYS = tuple(
    "modelId source index density top_logits bottom_logits explanations activations".split()
)
"""The keys of every exported feature, in this order (one string: "activations" is
also a run folder's name, which only `emosae.core.layout` may spell)."""


def source_id(hook: str, d_sae: int, name: str = "emosae") -> str:
    """Neuronpedia's source id of an SAE: layer, SAE set (residual stream or not), width."""
    kind = "res" if "resid" in hook else "hook"
    return f"{hook_layer(hook)}-{name}-{kind}-{d_sae}"


def export_feature(fd: FeatureData, model_id: str, source: str) -> dict[str, Any]:
    """One feature as Neuronpedia uploads it."""
    ctxs = fd.top + [c for b in fd.bands for c in b["contexts"]]
    values = (
        model_id,
        source,
        int(fd.index),
        float(fd.density),
        [str(t) for t in fd.logit_top],
        [str(t) for t in fd.logit_bottom],
        [{"description": fd.label}] if fd.label else [],
        [
            {"tokens": [str(t) for t in c["tokens"]], "values": [float(v) for v in c["values"]]}
            for c in ctxs
        ],
    )
    return dict(zip(KEYS, values, strict=True))


def export_features(
    fds: list[FeatureData], model_id: str, hook: str, d_sae: int
) -> list[dict[str, Any]]:
    source = source_id(hook, d_sae)
    return [export_feature(fd, model_id, source) for fd in fds]
