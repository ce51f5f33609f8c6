"""The resumable runner of `emosae run`.

Each stage's key is a hash of its part of the run config, the model, the source of the
code it runs (`stage_code`) and its inputs' recorded output hashes; `<out>/stages.json` records, per finished stage,
that key and the sha256 of every output file. A rerun skips a stage whose key matches
and whose outputs verify, so a killed run resumes with the first unfinished stage (the
cache stage also resumes mid-way, shard by shard), a corrupted output is recomputed with
a message, and an upgrade of emosae recomputes everything instead of reusing outputs
made by other code.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

from emosae import data
from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout
from emosae.core.log import logger
from emosae.core.provenance import function_imports, source_hash
from emosae.data.concepts import load_concept_set
from emosae.lm.models import check_layers_early
from emosae.pipeline.config import RunConfig
from emosae.pipeline.headline import headline_rows
from emosae.pipeline.stages import STAGE_NAMES, STAGES, Stage, StageContext


class StageLog:
    """`stages.json`: per finished stage, its key, seconds and outputs' sha256."""

    def __init__(self, layout: RunLayout):
        self.layout, self.path = layout, layout.stages
        try:
            self.data: dict[str, Any] = (
                json.loads(self.path.read_text()) if self.path.exists() else {}
            )
        except json.JSONDecodeError:
            logger.warning("%s is corrupt; all stages will be checked afresh", self.path)
            self.data = {}

    def valid(self, stage: str, key: str) -> bool:
        rec = self.data.get(stage)
        if not rec or rec["key"] != key:
            return False
        for rel, sha in rec["outputs"].items():
            p = self.layout.root / rel
            if not p.exists():
                logger.info("%s: output %s is missing; recomputing the stage", stage, rel)
                return False
            if io.sha256_file(p) != sha:
                logger.info(
                    "%s: output %s is corrupted (sha256 mismatch); recomputing the stage",
                    stage,
                    rel,
                )
                return False
        return True

    def record(self, stage: str, key: str, outputs: list[Path], seconds: float) -> None:
        root = self.layout.root
        self.data[stage] = {
            "key": key,
            "seconds": round(seconds, 1),
            "outputs": {str(p.relative_to(root)): io.sha256_file(p) for p in outputs},
        }
        io.write_json(self.path, self.data)

    def outputs_hash(self, stage: str) -> str:
        return io.hash_json(self.data.get(stage, {}).get("outputs", {}))


def stage_code(stage: Stage) -> str:
    """The code a stage's outputs depend on: the source of its function and of every
    emosae module that function imports, transitively (with the package version). An
    edit elsewhere (the report, a test) leaves the key of the cache and the SAE alone."""
    # every stage's model comes from lm.models (StageContext.model)
    roots = tuple(sorted(function_imports(stage.run) | {"emosae.lm.models"}))
    return io.hash_json([inspect.getsource(stage.run), source_hash(roots)])


def stage_key(stage: Stage, cfg: RunConfig, log: StageLog) -> str:
    """What a stage's outputs depend on: its config, the model, the code, its inputs."""
    return io.hash_json(
        {
            "stage": stage.name,
            "cfg": repr(stage.config(cfg)),
            "model": cfg.model,
            "code": stage_code(stage),
            "inputs": {d: log.outputs_hash(d) for d in stage.inputs},
        }
    )


def run_pipeline(
    cfg: RunConfig, *, only: tuple[str, ...] = (), model: Any = None
) -> dict[str, Any]:
    """Run (or resume) every stage (or those in `only`); returns the headline numbers."""

    bad = [s for s in only if s not in STAGE_NAMES]
    if bad:
        raise EmosaeError(f"unknown stage {bad}; stages are {', '.join(STAGE_NAMES)}")
    check_layers_early(cfg.model, [cfg.layer, *cfg.probes.layers])
    data.check_sources(cfg.cache.corpus.sources)
    load_concept_set(cfg.concepts)  # a bad concept set fails here, before any write
    folders.check_claimable(cfg.out, "run")
    io.check_creatable(cfg.out)
    with folders.lock(cfg.out):
        layout = RunLayout(folders.claim(cfg.out, "run"))
        return _run_stages(cfg, layout, only, model)


def _run_stages(
    cfg: RunConfig, layout: RunLayout, only: tuple[str, ...], model: Any
) -> dict[str, Any]:
    log = StageLog(layout)
    ctx = StageContext(cfg, layout, model)
    todo = [s for s in STAGES if not only or s.name in only]
    t_all = time.perf_counter()
    for i, stage in enumerate(todo, 1):
        tag = f"[{i}/{len(todo)}] {stage.name}"
        key = stage_key(stage, cfg, log)
        if log.valid(stage.name, key):
            logger.info("%s: up to date, skipped", tag)
            continue
        logger.info("%s ...", tag)
        t0 = time.perf_counter()
        stage.run(ctx)
        log.record(stage.name, key, stage.outputs(layout, cfg), time.perf_counter() - t0)
        logger.info("%s: done in %.0f s", tag, time.perf_counter() - t0)
    return {
        "rows": headline_rows(layout),
        "out": str(layout.root),
        "wall_seconds_this_invocation": round(time.perf_counter() - t_all, 1),
    }
