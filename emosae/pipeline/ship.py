"""Ship a finished run as the packaged defaults: its SAE (weights as fp16), probe
vectors, labels, calibrated strengths and metrics, with the command and code version that made them, into
`checkpoints/<model>/` of the source checkout (a wheel carries that folder inside the
package; see `emosae.core.layout.shipped_checkpoint`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout
from emosae.core.provenance import code_version


def ship(run: str | Path, dest: str | Path, command: str) -> Path:
    """Copy what `load_directions()` needs from the run folder `run` into `dest`."""
    import torch
    from safetensors.torch import load_file, save_file

    from emosae.pipeline.headline import headline_rows

    src, dest = RunLayout(run), Path(dest)
    need = [src.sae.cfg, src.probes.vectors_meta, src.labels.labels]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise EmosaeError(f"cannot ship an unfinished run: missing {', '.join(missing)}")
    folders.check_claimable(dest, "checkpoint")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_dir(dest) as tmp:
        to = RunLayout(tmp)
        to.sae.dir.mkdir()
        w = load_file(str(src.sae.weights))
        save_file({k: v.to(torch.float16) for k, v in w.items()}, str(to.sae.weights))
        cfg = io.read_json(src.sae.cfg)
        cfg["dtype"] = "float16"
        io.write_json(to.sae.cfg, cfg, indent=None)
        for f in ("provenance", "metrics"):
            shutil.copy(getattr(src.sae, f), getattr(to.sae, f))
        to.probes.dir.mkdir()
        for f in ("vectors", "vectors_meta", "results"):
            shutil.copy(getattr(src.probes, f), getattr(to.probes, f))
        to.labels.dir.mkdir()
        shutil.copy(src.labels.labels, to.labels.labels)
        if src.calibrate.calibration.exists():  # the calibrated strengths of its vectors
            to.calibrate.dir.mkdir()
            shutil.copy(src.calibrate.calibration, to.calibrate.calibration)
        sae_metrics = io.read_json(src.sae.metrics)
        io.write_json(to.metrics, {"sae": sae_metrics, "headline": headline_rows(src)})
        prov = {"command": command, "code_version": code_version(), "source_run": str(src.root)}
        io.write_json(to.provenance, prov)
        seal_checkpoint(to)
    return dest


def seal_checkpoint(to: RunLayout) -> None:
    """Seal each folder of a checkpoint, then the whole (its manifest of every file)."""
    for kind in ("sae", "probes", "labels", "calibrate"):
        if getattr(to, kind).dir.exists():
            folders.seal(getattr(to, kind).dir, kind)
    folders.seal(to.root, "checkpoint")


def renew(
    dest: str | Path,
    command: str,
    *,
    labels: str | Path | None = None,
    calibrations: list[str | Path] = (),
) -> Path:
    """Replace a checkpoint's feature labels and/or its calibration with files made on
    copies of it (`emosae labels --sae <checkpoint>/sae --out ...`, `emosae steer
    --calibrate --save --directions <copy>`; several calibration files, made in
    parallel, are merged concept by concept), keeping its SAE and probe vectors. The
    provenance records the command and code version; every folder is sealed again, and
    the checkpoint is replaced in one rename."""
    dest = Path(dest)
    folders.verify(dest)
    for src in [labels, *calibrations]:
        if src is not None and not Path(src).is_file():
            raise EmosaeError(f"no such file: {src}")
    merged = None
    if calibrations:
        merged = {}
        for src in calibrations:
            for kind, recs in io.read_json(src).items():
                merged[kind] = {**merged.get(kind, {}), **recs} if kind != "config" else recs
    parts = {"labels": labels, "calibrate": merged}
    with io.atomic_dir(dest) as tmp:
        shutil.copytree(dest, tmp, dirs_exist_ok=True)
        to = RunLayout(tmp)
        if labels is not None:
            shutil.copy(labels, to.labels.labels)
        if merged is not None:
            to.calibrate.dir.mkdir(exist_ok=True)
            io.write_json(to.calibrate.calibration, merged)
        prov = io.read_json(to.provenance)
        done = [n for n, s in parts.items() if s is not None]
        prov.setdefault("renewed", []).append(
            {"command": command, "code_version": code_version(), "parts": done}
        )
        io.write_json(to.provenance, prov)
        seal_checkpoint(to)
    return dest
