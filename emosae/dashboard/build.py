"""`build_dashboard`: load an SAE, its labels, a probe folder and the activation cache,
collect every page's data (`data`), and write the pages (`pages`) and the Neuronpedia
export (`neuronpedia`) into a dashboard folder (file names from
`emosae.core.layout.DashboardFiles`), claimed and sealed like every emosae folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import CacheFiles, DashboardFiles, LabelFiles, ProbeFiles, SAEFiles
from emosae.core.log import logger
from emosae.dashboard.data import DashboardConfig, check_features, collect, load_inputs
from emosae.dashboard.neuronpedia import export_features
from emosae.dashboard.pages import PageMeta, feature_page, index_page


def build_dashboard(
    sae_files: SAEFiles,
    label_files: LabelFiles,
    probe_files: ProbeFiles,
    cache_files: CacheFiles,
    out: DashboardFiles,
    model: Any,
    feats: list[int] | None = None,
    cfg: DashboardConfig | None = None,
    title: str = "emosae features",
) -> Path:
    """Write the pages of `feats` (default: every labelled feature); returns the index.
    Feature pages of an earlier build that are not rebuilt are removed."""
    cfg = cfg or DashboardConfig()
    folders.check_claimable(out.dir, "dashboard")
    inp = load_inputs(sae_files, label_files, probe_files, cache_files)
    if feats is None:
        feats = [int(f) for f in inp.labels.get("features", {})]
        if not feats:
            raise EmosaeError(f"{label_files.labels} labels no feature; name some with --features")
    feats = check_features(feats, inp.d_sae)
    logger.info("dashboard: %d features over %d cache tokens", len(feats), inp.cache.n_rows)
    data = collect(inp, feats, model, cfg)
    meta = PageMeta(title, inp.model_name, inp.hook, inp.d_sae)
    folders.claim(out.dir, "dashboard")
    keep = {out.index, *(out.feature(f) for f in feats)}
    for old in out.outputs():
        if old.suffix == out.index.suffix and old not in keep:
            old.unlink()
    for fd in data:
        io.write_text(out.feature(fd.index), feature_page(fd, meta, out))
    io.write_json(out.neuronpedia, export_features(data, inp.model_name, inp.hook, inp.d_sae))
    io.write_text(out.index, index_page(data, meta, out))
    folders.seal(out.dir, "dashboard")
    return out.index
