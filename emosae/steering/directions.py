"""Load emotion directions as `SteeringVector`s: probe vectors from a probe folder, or
SAE decoder directions of each emotion's best feature from a label folder. With no
path, the defaults shipped for the default model (inside the installed package)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from emosae.core import compat, folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import LabelFiles, ProbeFiles, RunLayout, shipped_checkpoint
from emosae.core.log import logger
from emosae.features.labels import load_labels
from emosae.lm.hooks import block_layer, hook_layer, resid_hook
from emosae.probes.vectors import load_vectors
from emosae.steering.calibrations import (  # noqa: F401 (re-exported)
    calibration_files,
    calibrations,
    check_entries,
    user_calibrations,
)
from emosae.steering.vector import ReadoutRef, SteeringVector


def _probe_files(root: Path):
    """A probe folder given itself or the run/checkpoint folder around it."""
    here = ProbeFiles(root)
    return here if here.vectors_meta.exists() else RunLayout(root).probes


def load_directions(
    path: str | Path | None = None,
    kind: Literal["probe", "sae"] = "probe",
    *,
    layer: int | None = None,
    method: Literal["diffmean", "logistic"] = "diffmean",
    sae_dir: str | Path | None = None,
    probe_dir: str | Path | None = None,
    calibrated: bool = True,
) -> dict[str, SteeringVector]:
    """{emotion: SteeringVector}, unit-norm, with the mean residual norm for relative strength.

    calibrated=False: the vectors as fitted, no calibration attached or checked (what a
    calibration run starts from: a folder's old calibration may name other concepts).

    kind="probe": `path` is a run, checkpoint or probe folder; `layer` defaults to the SAE
    layer of that run (15 for the shipped SmolLM2 directions).
    kind="sae": `path` is a run, checkpoint or label folder (labels.json); each emotion's
    direction is the decoder row of its best feature (labelled or not; `source` says which).
    """
    root = Path(path) if path is not None else shipped_checkpoint()
    if kind == "probe":
        vecs = _probe_directions(root, layer, method)
        hooks = {resid_hook(L) for L in io.read_json(_probe_files(root).vectors_meta)["layers"]}
    elif kind == "sae":
        vecs = _sae_directions(root, sae_dir, probe_dir)
        hooks = {v.hook_name for v in vecs.values()}
    else:
        raise EmosaeError(f"kind must be 'probe' or 'sae', not {kind!r}")
    if not calibrated:
        return vecs
    # every calibration entry is checked before any is used (emosae.steering.calibrations)
    files = calibration_files(RunLayout(root))
    check_entries(files, kind, vecs, hooks)
    if kind == "probe" and layer is None:  # each at the layer its calibration chose
        vecs = _at_calibrated_layers(vecs, root, method, files)
    return with_calibrated_strengths(vecs, RunLayout(root), kind, files)


def reading_directions(
    path: str | Path | None = None, method: Literal["diffmean", "logistic"] = "diffmean"
) -> dict[str, SteeringVector]:
    """The probe vectors at a folder's reading layer with their readout reference, for
    reading only: no calibration is attached or checked, so a run folder whose calibration
    is stale (a run being redone on another concept set) still reads."""
    return _probe_directions(Path(path) if path is not None else shipped_checkpoint(), None, method)


def steering_candidates(
    path: str | Path | None, layers: list[int], method: Literal["diffmean", "logistic"] = "diffmean"
) -> dict[str, dict[int, SteeringVector]]:
    """{concept: {layer: vector}}: each concept's probe vector at each of `layers`, all
    carrying the readout of the folder's reading layer (so their effects on a reply are
    measured in the same units, wherever they steer)."""
    root = Path(path) if path is not None else shipped_checkpoint()
    readers = _probe_directions(root, None, method)
    by_layer = {L: _probe_directions(root, L, method) for L in layers}
    return {e: {L: _reading_like(by_layer[L][e], r) for L in layers} for e, r in readers.items()}


def _reading_like(vec: SteeringVector, reader: SteeringVector) -> SteeringVector:
    """`vec` (steering where it is) read as `reader` reads."""
    if vec.hook_name == reader.hook_name or reader.readout is None:
        return vec.with_readout(reader.readout)
    ref = replace(reader.readout, hook=reader.hook_name, unit=reader.direction)
    return vec.with_readout(ref)


def _at_calibrated_layers(
    vecs: dict[str, SteeringVector], root: Path, method: str, files: list
) -> dict[str, SteeringVector]:
    """Each vector moved to the layer its calibration (the user's, else the folder's)
    chose to steer at; it keeps reading where it read."""
    found = [cal.get("probe", {}) for _, cal in files]
    want = {}
    for e, v in vecs.items():
        c = next((c for c in (f.get(e) for f in found) if _same_source(c, v)), None)
        if c is not None and c["hook"] != v.hook_name:  # a checked probe-layer hook
            want[e] = block_layer(c["hook"])
    if not want:
        return vecs
    other = {L: _probe_directions(root, L, method) for L in set(want.values())}
    return {e: _reading_like(other[want[e]][e], v) if e in want else v for e, v in vecs.items()}


def _same_source(c: Any, v: SteeringVector) -> bool:
    return isinstance(c, dict) and c.get("source") == v.source


def with_calibrated_strengths(
    vecs: dict[str, SteeringVector], layout: RunLayout, kind: str, files: list | None = None
) -> dict[str, SteeringVector]:
    """Give each vector calibrated for this kind, source and hook its recommended strength:
    the user's own calibration of a shipped checkpoint's vector, where there is one, else
    the folder's (`files`: `calibration_files(layout)`, when already read)."""
    (where, mine), (_, cal) = files or calibration_files(layout)
    mine, cal = mine.get(kind, {}), cal.get(kind, {})
    out = {}
    for e, v in vecs.items():
        c = next((c for c in (mine.get(e), cal.get(e)) if fits_calibration(c, v)), None)
        if c is not None and c is mine.get(e):
            logger.info("%s (%s): your calibrated strength from %s", e, kind, where)
        out[e] = v.with_default_strength(c.get("recommended")) if c else v
    return out


def fits_calibration(c: Any, v: SteeringVector) -> bool:
    """A calibration entry made for this vector (its source and hook)."""
    return _same_source(c, v) and c.get("hook") == v.hook_name


def _probe_directions(root: Path, layer: int | None, method: str) -> dict[str, SteeringVector]:
    t, meta = load_vectors(_probe_files(root))
    # default: the layer the folder's SAE and experiments use (the probe stage's token layer)
    if layer is None:
        layer = meta.get("token_layer", meta["config"].get("token_layer", meta["best_layer"]))
    key = f"{method}.L{layer}"
    if key not in t:
        raise EmosaeError(f"no {method} vectors for layer {layer}; layers here: {meta['layers']}")
    hook, norm = resid_hook(layer), meta["mean_resid_norm"][str(layer)]
    return {
        e: SteeringVector.from_direction(
            t[key][i], hook, e, f"probe:{method}", meta["model"], norm
        ).with_readout(_readout_ref(t, meta, layer, i if method == "diffmean" else None))
        for i, e in enumerate(compat.key(meta, "concepts", "emotions"))
    }


def _readout_ref(t: dict, meta: dict, layer: int, i: int | None) -> ReadoutRef | None:
    """The readout reference a probe folder recorded for `layer` (and for concept `i`'s
    own conversation scale; SAE directions, `i` None, read conversations in the text
    scale). None for a folder of emosae 0.1, which kept no centre."""
    center = t.get(f"center.L{layer}")
    if center is None:
        return None
    chat_scale = t.get(f"chat_scale.L{layer}")
    return ReadoutRef(
        center,
        meta["read_scale"][str(layer)],
        int(meta["config"]["read"]["skip"]),
        t.get(f"chat_center.L{layer}"),
        float(chat_scale[i]) if chat_scale is not None and i is not None else None,
    )


def _sae_directions(
    root: Path, sae_dir: str | Path | None, probe_dir: str | Path | None
) -> dict[str, SteeringVector]:
    from emosae.sae.training import load_sae

    lab = LabelFiles(root) if LabelFiles(root).labels.exists() else RunLayout(root).labels
    if not lab.labels.exists():
        raise EmosaeError(f"no feature labels in {root} (need labels.json)")
    run = RunLayout(lab.dir.parent)
    folders.verify(lab.dir, [lab.labels.name])
    labels = load_labels(lab.labels)
    # a run's own SAE, else the one the labels name (an SAE labelled with `--sae`)
    sae_at = Path(sae_dir) if sae_dir else run.sae.dir
    sae = load_sae(sae_at if sae_at.exists() else labels["sae"])
    hook = labels["hook"]
    probes = _probe_files(Path(probe_dir)) if probe_dir else run.probes
    if probes.vectors_meta.exists():
        t, vmeta = load_vectors(probes)
        norm, model = vmeta["mean_resid_norm"][str(hook_layer(hook))], vmeta["model"]
        ref = _readout_ref(t, vmeta, hook_layer(hook), None)
    else:  # no probes beside them: the norm the labelling measured, no readout centre
        norm, model, ref = labels["mean_resid_norm"], labels["model"], None
    out = {}
    for e, best in labels["best_per_concept"].items():
        f = best["feature"]
        kind = best.get("kind", "concept" if best["passes"] else "unlabelled")
        tag = {"concept": "labelled", "shared": "in a cluster label"}.get(kind, "best, unlabelled")
        out[e] = SteeringVector.from_direction(
            sae.W_dec[f].detach(), hook, e, f"sae:feature {f} ({tag})", model, norm
        ).with_readout(ref)
    return out
