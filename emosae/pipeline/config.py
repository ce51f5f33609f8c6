"""The whole pipeline's config: a few run-wide choices plus every stage's own config,
nested, so every stage knob is a flag of `emosae run` (through simple_parsing: a knob
whose name is unique is `--name`, e.g. `--lr`; one that two stages share is prefixed
with its stage, e.g. `--train.batch_size`, `--cache.batch_size`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from emosae.core.errors import EmosaeError
from emosae.core.tracking import WandbConfig
from emosae.experiments.behaviour import ExperimentConfig
from emosae.experiments.calibration import CalibrationConfig
from emosae.experiments.inputs import STEERED_EMOTIONS
from emosae.features.labels import LabelConfig
from emosae.probes.reading import ReadConfig
from emosae.probes.vectors import VectorsConfig
from emosae.sae.cache import CacheConfig
from emosae.sae.config import SAEConfig, TrainConfig
from emosae.sae.contexts import CorpusConfig
from emosae.validation.run import ValidateConfig

Preset = Literal["smoke", "default", "ship", "full"]


@dataclass(frozen=True)
class CalibrateConfig:
    """Which steering vectors the run calibrates (experiments then use their strengths)."""

    emotions: tuple[str, ...] = STEERED_EMOTIONS
    kinds: tuple[Literal["probe", "sae"], ...] = ("probe", "sae")
    sweep: CalibrationConfig = field(default_factory=CalibrationConfig)
    layers: tuple[int, ...] = ()
    """Probe layers each probe vector may steer at (chosen per concept on the calibration
    prompts); empty: the run's layer only. SAE vectors steer at the SAE's layer."""


@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline: run-wide choices, then one config per stage."""

    out: str = "runs/default"
    """Run folder (created; a rerun resumes it)."""
    model: str | None = None
    """Model name for `emosae.load_model` (default: the embedded SmolLM2)."""
    concepts: str | None = None
    """Concept-set folder (see `emosae.data.concepts`; default: the bundled emotions)."""
    layer: int = 15
    """The SAE's layer, also where story tokens are kept, labels read and experiments
    steer (half depth of SmolLM2's 30 layers)."""
    device: str | None = None
    """cpu or cuda (default: cuda when available)."""
    cache: CacheConfig = field(
        default_factory=lambda: CacheConfig(corpus=CorpusConfig(max_tokens=300_000))
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            sae=SAEConfig(architecture="topk", d_sae=3072, k=64), batch_size=256
        )
    )
    """TopK at batch 256: the field's bar on 300 k tokens in the same time as BatchTopK at 1024
    (benchmarks/results/sae_default_sweep.md)."""
    probes: VectorsConfig = field(default_factory=VectorsConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        if self.layer < 0:
            raise EmosaeError(f"layer must be >= 0, not {self.layer}")


def _smoke() -> RunConfig:
    return RunConfig(
        out="runs/smoke",
        cache=CacheConfig(corpus=CorpusConfig(max_tokens=16_384, emotion_every=4)),
        train=TrainConfig(
            sae=SAEConfig(d_sae=1152, k=32), epochs=2.0, batch_size=512, eval_contexts=8
        ),
        probes=VectorsConfig(
            layers=(5, 10, 15),
            read=ReadConfig(max_tokens=96, batch_size=16),
            max_stories_per_concept=6,
            max_dialogues=48,
        ),
        labels=LabelConfig(transfer=False),
        validate=ValidateConfig(bundled=False, per_concept=2, permutations=5),
        calibrate=CalibrateConfig(
            emotions=("happy",),
            kinds=("probe",),
            sweep=CalibrationConfig(strengths=(0.4,), n_prompts=2, n_heldout=2, max_new_tokens=8),
        ),
        experiments=ExperimentConfig(
            preference_pairs=48,
            steer_pairs=24,
            gen_prompts=2,
            gen_emotions=("happy", "sad"),
            gen_strengths=(-0.2, 0.0, 0.2),
            gen_tokens=16,
            pressure_strengths=(-0.2, 0.0, 0.2),
            pressure_items=6,
        ),
    )


def _full() -> RunConfig:
    return RunConfig(
        out="runs/full",
        cache=CacheConfig(
            corpus=CorpusConfig(max_tokens=20_000_000, context_len=256), dtype="bfloat16"
        ),
        train=TrainConfig(
            sae=SAEConfig(d_sae=16384, k=48), epochs=1.0, batch_size=4096, eval_contexts=256
        ),
        probes=VectorsConfig(layer_stride=1),
        experiments=ExperimentConfig(preference_pairs=4032, steer_pairs=2000, gen_prompts=30),
    )


def _ship() -> RunConfig:
    """The shipped checkpoint: the default run with a wider TopK SAE trained on 2M tokens
    (explained variance 0.89 at L0 = k = 64, 0.3% dead)."""
    return RunConfig(
        out="runs/ship",
        cache=CacheConfig(corpus=CorpusConfig(max_tokens=2_000_000)),
        train=TrainConfig(sae=SAEConfig(architecture="topk", d_sae=4608, k=64), epochs=1.5),
    )


PRESETS = {"smoke": _smoke, "default": RunConfig, "ship": _ship, "full": _full}
"""smoke: < 3 min on 2 CPU cores (CI); default: about 38 min on 2 cores; ship: the
shipped checkpoint, about 80 min on 2 cores; full: GPU-sized."""


def preset(name: Preset, **overrides: Any) -> RunConfig:
    """A preset's RunConfig, with top-level fields replaced by `overrides`."""
    if name not in PRESETS:
        raise EmosaeError(f"unknown preset {name!r}; choose {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    return replace(cfg, **overrides) if overrides else cfg
