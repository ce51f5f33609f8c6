"""Load emotion directions as `SteeringVector`s: probe vectors from a probe folder, or
SAE decoder directions of each emotion's best feature from a label folder. With no
path, the defaults shipped in `checkpoints/` for the default model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from safetensors.torch import load_file

from emosae.errors import EmosaeError
from emosae.steering import SteeringVector

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "smollm2-135m-instruct"


def load_directions(
    path: str | Path | None = None,
    kind: Literal["probe", "sae"] = "probe",
    *,
    layer: int | None = None,
    method: Literal["diffmean", "logistic"] = "diffmean",
    sae_dir: str | Path | None = None,
    probe_dir: str | Path | None = None,
) -> dict[str, SteeringVector]:
    """{emotion: SteeringVector}, unit-norm, with the mean residual norm for relative strength.

    kind="probe": `path` is a run, checkpoint or probe folder; `layer` defaults to the SAE
    layer of that run (15 for the shipped SmolLM2 directions).
    kind="sae": `path` is a label folder (labels.json); each emotion's direction is the
    decoder row of its best feature (labelled or not; `source` says which feature).
    """
    root = Path(path) if path is not None else SHIPPED
    if kind == "probe":
        probe = root if (root / "vectors.json").exists() else root / "probes"
        if not (probe / "vectors.json").exists():
            raise EmosaeError(
                f"no probe vectors in {root} (need vectors.json + vectors.safetensors)"
            )
        meta = json.loads((probe / "vectors.json").read_text())
        # default: the layer the folder's SAE and experiments use (the probe stage's token layer)
        layer = (
            layer if layer is not None else meta["config"].get("token_layer", meta["best_layer"])
        )
        key = f"{method}.L{layer}"
        t = load_file(str(probe / "vectors.safetensors"))
        if key not in t:
            raise EmosaeError(
                f"no {method} vectors for layer {layer}; layers here: {meta['layers']}"
            )
        hook = f"blocks.{layer}.hook_resid_post"
        norm = meta["mean_resid_norm"][str(layer)]
        return {
            e: SteeringVector.from_direction(
                t[key][i], hook, e, f"probe:{method}", meta["model"], norm
            )
            for i, e in enumerate(meta["emotions"])
        }
    if kind == "sae":
        from emosae.training import load_sae

        lab = root if (root / "labels.json").exists() else root / "labels"
        if not (lab / "labels.json").exists():
            raise EmosaeError(f"no feature labels in {root} (need labels.json)")
        labels = json.loads((lab / "labels.json").read_text())
        sae = load_sae(Path(sae_dir) if sae_dir else lab.parent / "sae")
        pdir = Path(probe_dir) if probe_dir else lab.parent / "probes"
        vmeta = json.loads((pdir / "vectors.json").read_text())
        hook = labels["hook"]
        norm = vmeta["mean_resid_norm"][hook.split(".")[1]]
        out = {}
        for e, best in labels["best_per_emotion"].items():
            f = best["feature"]
            tag = "labelled" if best["passes"] else "best, unlabelled"
            out[e] = SteeringVector.from_direction(
                sae.W_dec[f].detach(), hook, e, f"sae:feature {f} ({tag})", vmeta["model"], norm
            )
        return out
    raise EmosaeError(f"kind must be 'probe' or 'sae', not {kind!r}")
