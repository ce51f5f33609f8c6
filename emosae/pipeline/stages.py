"""Every stage of `emosae run`, declared once: its name, the stages whose outputs it
reads, the part of the run config it depends on, the function that runs it and the
files it writes. Adding a stage means adding one `Stage` to `STAGES`; the runner, the
stage log and `--only` pick it up from here.

Stages, in order: cache -> train -> probes -> labels -> compare -> dashboard ->
calibrate -> experiments -> report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.layout import RunLayout
from emosae.core.log import logger
from emosae.experiments.behaviour import EXPERIMENTS
from emosae.lm.hooks import resid_hook
from emosae.pipeline.config import RunConfig


@dataclass
class StageContext:
    """What a running stage gets: the run config, the run folder's layout and the model
    (loaded on first use, once per run)."""

    cfg: RunConfig
    layout: RunLayout
    _model: Any = field(default=None, repr=False)

    def model(self) -> Any:
        if self._model is None:
            from emosae.lm.models import load_model

            self._model = load_model(self.cfg.model, device=self.cfg.device)
        return self._model


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]
    """Stages whose outputs this one reads (their output hashes enter its key)."""
    config: Callable[[RunConfig], Any]
    """The part of the run config the stage's outputs depend on (enters its key)."""
    run: Callable[[StageContext], None]
    outputs: Callable[[RunLayout, RunConfig], list[Path]]
    """The files it writes (their sha256 are recorded and checked before a skip)."""


def _cache(ctx: StageContext) -> None:
    from emosae.sae.cache import CacheJob, cache_activations

    c = ctx.cfg
    job = CacheJob(
        out=str(ctx.layout.cache.dir),
        model=c.model,
        layers=(c.layer,),
        device=c.device,
        cache=c.cache,
    )
    cache_activations(job, ctx.model())


def _train(ctx: StageContext) -> None:
    from emosae.sae.config import TrainJob
    from emosae.sae.training import train_sae

    c, lay = ctx.cfg, ctx.layout
    job = TrainJob(
        cache=str(lay.cache.dir),
        hook=resid_hook(c.layer),
        out=str(lay.sae.dir),
        device=c.device,
        train=c.train,
        wandb=c.wandb,
    )
    train_sae(job, model=ctx.model())


def _probes(ctx: StageContext) -> None:
    from emosae.data.concepts import load_concept_set
    from emosae.probes.vectors import fit_vectors, read_stories

    cs = load_concept_set(ctx.cfg.concepts)
    read_stories(ctx.cfg.probes, ctx.model(), ctx.cfg.layer, ctx.layout.probes, cs)
    fit_vectors(ctx.cfg.probes, ctx.layout.probes)


def _labels(ctx: StageContext) -> None:
    from emosae.features.labelling import label_features

    lay = ctx.layout
    label_features(lay.probes, lay.sae, lay.cache, lay.labels, ctx.model(), ctx.cfg.labels)
    if ctx.cfg.labels.transfer:
        from emosae.validation.run import transfer_run_labels

        c = ctx.cfg.labels
        transfer_run_labels(ctx.model(), lay.root, c.outside, c.permutations, c.fdr_q or 0.05)


def _compare(ctx: StageContext) -> None:
    from emosae.features.compare import compare_features

    lay = ctx.layout
    compare_features(lay.probes, lay.sae, lay.labels, lay.compare)


def _experiments(ctx: StageContext) -> None:
    from emosae.experiments import behaviour as bh
    from emosae.reading.trace import Readout
    from emosae.steering.directions import load_directions

    cfg, lay, model, layer = ctx.cfg.experiments, ctx.layout, ctx.model(), ctx.cfg.layer
    probe = load_directions(lay.root, kind="probe", layer=layer)
    ro = Readout.of(model, probe)
    sae = load_directions(lay.root, kind="sae")
    pref = {
        f"{kind}:{e}": v
        for kind, src in (("probe", probe), ("sae", sae))
        for e, v in src.items()
        if e in ("blissful", "hostile")
    }
    runs = {
        "scenarios": lambda: bh.scenarios(ro),
        "intensity": lambda: bh.intensity(ro),
        "preferences": lambda: bh.preferences(ro, pref, cfg),
        "generation": lambda: bh.generation(ro, probe, cfg),
        "pressure": lambda: bh.pressure(ro, probe, cfg),
        "traces": lambda: bh.traces(model, probe),
    }
    folders.claim(lay.experiments.dir, "experiments")
    for name, fn in runs.items():
        if name in cfg.skip:
            continue
        why = bh.why_skipped(name, cfg, ro.concepts)
        logger.info("  experiment %s%s", name, f" skipped: {why}" if why else "")
        # rounded: np.polyfit (LAPACK) varies in the last bits from one process to the
        # next, and a rerun must reproduce the file's hash
        res = {"skipped": why} if why else io.round_floats(fn())
        io.write_json(lay.experiments.result(name), res)
    folders.seal(lay.experiments.dir, "experiments")


def _validate(ctx: StageContext) -> None:
    from emosae.validation.run import validate, write_validation

    lay, c = ctx.layout, ctx.cfg.validate
    res = validate(ctx.model(), lay.root, c.texts(), bundled=c.bundled, permutations=c.permutations)
    write_validation(lay.validation, res)


def _calibrate(ctx: StageContext) -> None:
    from emosae.experiments.calibration import calibrate, save_calibrations
    from emosae.steering.directions import load_directions, steering_candidates

    c, lay = ctx.cfg.calibrate, ctx.layout
    by_kind = {}
    for kind in c.kinds:
        vecs = load_directions(lay.root, kind=kind, layer=ctx.cfg.layer, calibrated=False)
        layers = list(c.layers) if kind == "probe" else []
        cands = steering_candidates(lay.root, layers) if layers else {}
        absent = [e for e in c.emotions if e not in vecs]
        if absent:
            logger.info(
                "  calibrate %s: %s not in the concept set, skipped", kind, ", ".join(absent)
            )
        by_kind[kind] = [
            calibrate(vecs[e], ctx.model(), cfg=c.sweep, candidates=cands.get(e))
            for e in c.emotions
            if e in vecs
        ]
    save_calibrations(lay, by_kind, c.sweep, merge=False)  # this run's calibrations only


def _dashboard(ctx: StageContext) -> None:
    from emosae.dashboard.build import build_dashboard

    lay = ctx.layout
    build_dashboard(lay.sae, lay.labels, lay.probes, lay.cache, lay.dashboard, ctx.model())


def _report(ctx: StageContext) -> None:
    from emosae.pipeline.report import write_report

    write_report(ctx.layout, ctx.cfg.wandb)


def _report_outputs(lay: RunLayout, cfg: RunConfig) -> list[Path]:
    from emosae.pipeline.report import report_outputs

    return report_outputs(lay)


def _probes_key(c: RunConfig) -> Any:
    """The probe stage depends on the concept set's content, not on its folder name."""
    from emosae.data.concepts import load_concept_set

    return (c.probes, c.layer, load_concept_set(c.concepts).fingerprint)


STAGES: tuple[Stage, ...] = (
    Stage("cache", (), lambda c: (c.cache, c.layer), _cache, lambda L, c: L.cache.outputs()),
    Stage("train", ("cache",), lambda c: (c.train, c.layer), _train, lambda L, c: L.sae.outputs()),
    Stage("probes", (), _probes_key, _probes, lambda L, c: L.probes.outputs()),
    Stage(
        "labels",
        ("train", "probes", "cache"),
        lambda c: c.labels,
        _labels,
        lambda L, c: L.labels.outputs(),
    ),
    Stage(
        "compare",
        ("train", "probes", "labels"),
        lambda c: None,
        _compare,
        lambda L, c: L.compare.outputs(),
    ),
    Stage(
        "validate",
        ("probes", "labels"),
        lambda c: c.validate,
        _validate,
        lambda L, c: L.validation.outputs(),
    ),
    Stage(
        "dashboard",
        ("cache", "train", "probes", "labels"),
        lambda c: None,
        _dashboard,
        lambda L, c: L.dashboard.outputs(),
    ),
    Stage(
        "calibrate",
        ("train", "probes", "labels"),
        lambda c: (c.calibrate, c.layer),
        _calibrate,
        lambda L, c: L.calibrate.outputs(),
    ),
    Stage(
        "experiments",
        ("probes", "labels", "train", "calibrate"),
        lambda c: (c.experiments, c.layer),
        _experiments,
        lambda L, c: [L.experiments.result(n) for n in EXPERIMENTS if n not in c.experiments.skip],
    ),
    Stage(
        "report",
        (
            "cache",
            "train",
            "probes",
            "labels",
            "compare",
            "validate",
            "calibrate",
            "experiments",
            "dashboard",
        ),  # fmt: skip
        lambda c: None,
        _report,
        _report_outputs,
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
