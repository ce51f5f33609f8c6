"""Where every artifact lives: the file names inside each artifact folder and the
folders of a run. This is the only module that spells a run path or an artifact file
name; everything else asks it (`RunLayout(out).sae.weights`, `CacheFiles(d).shard(3)`).

A run folder (`emosae run --out DIR`):

    DIR/stages.json          per finished stage: its key, seconds, outputs' sha256
    DIR/activations/         CacheFiles: manifest.json, config.json, documents.jsonl,
                             shard_NNNNN.safetensors + shard_NNNNN.json sidecars
    DIR/sae/                 SAEFiles: cfg.json + sae_weights.safetensors (sae-lens),
                             emosae.json (provenance), metrics.json
    DIR/probes/              ProbeFiles: story_acts.safetensors, vectors.safetensors,
                             vectors.json, results.json
    DIR/labels/              LabelFiles: labels.json, scores.safetensors
    DIR/compare/             CompareFiles: compare.json
    DIR/calibrate/           CalibrationFiles: calibration.json
    DIR/experiments/         ExperimentFiles: <experiment>.json
    DIR/report/              ReportFiles: index.html, headline.json, <plot>.png

A shipped checkpoint folder (`checkpoints/<model>/`) is a run folder holding only
sae/, probes/ (no story activations), labels/labels.json, metrics.json,
PROVENANCE.json and, where vectors were calibrated, calibrate/calibration.json.

Every folder emosae writes also holds `.emosae.json` (its kind and seal, see
`emosae.core.folders`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emosae.core.io import TMP_SUFFIX

MARKER_NAME = ".emosae.json"
"""In every folder emosae writes: its kind and, once finished, its files' sha256."""
LEGACY_FILES = {
    "run": "stages.json",
    "cache": "manifest.json",
    "sae": "emosae.json",
    "probes": "vectors.json",
    "labels": "labels.json",
    "checkpoint": "PROVENANCE.json",
}
"""A file that marks a folder written by emosae 0.1 (before markers) as of that kind."""
LOCK_NAME = ".emosae.lock"
"""Suffix of `.<folder>.emosae.lock`, beside a folder while one process writes it."""
OUTPUTS_NAME = ".emosae-outputs.json"
"""Beside single-file outputs (pages, exports, tables): the sha256 of each file emosae
wrote in that folder, so a rerun may replace its own file but never a user's."""


def files_in(folder: Path, pattern: str = "*") -> list[Path]:
    """Finished files under `folder` (temp files left out), sorted."""
    return sorted(
        p for p in folder.rglob(pattern) if p.is_file() and not p.name.endswith(TMP_SUFFIX)
    )


@dataclass(frozen=True)
class CacheFiles:
    """An activation cache folder (see `emosae.sae.cache`)."""

    dir: Path

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def config(self) -> Path:
        """The cache's header, written first: a rerun with another config is refused."""
        return self.dir / "config.json"

    @property
    def documents(self) -> Path:
        return self.dir / "documents.jsonl"

    def shard(self, i: int) -> Path:
        return self.dir / f"shard_{i:05d}.safetensors"

    def sidecar(self, i: int) -> Path:
        """Written after shard `i`: its sha256 and row count (marks it complete)."""
        return self.dir / f"shard_{i:05d}.json"

    def shards(self) -> list[Path]:
        return files_in(self.dir, "shard_*.safetensors")

    def outputs(self) -> list[Path]:
        return [self.manifest, self.documents, *self.shards()]


@dataclass(frozen=True)
class SAEFiles:
    """An SAE checkpoint folder in sae-lens's format plus emosae's json."""

    dir: Path

    @property
    def cfg(self) -> Path:
        return self.dir / "cfg.json"

    @property
    def weights(self) -> Path:
        return self.dir / "sae_weights.safetensors"

    @property
    def provenance(self) -> Path:
        return self.dir / "emosae.json"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    def outputs(self) -> list[Path]:
        return files_in(self.dir)


@dataclass(frozen=True)
class ProbeFiles:
    """The probe stage's folder."""

    dir: Path

    @property
    def story_acts(self) -> Path:
        return self.dir / "story_acts.safetensors"

    @property
    def vectors(self) -> Path:
        return self.dir / "vectors.safetensors"

    @property
    def vectors_meta(self) -> Path:
        return self.dir / "vectors.json"

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    def outputs(self) -> list[Path]:
        return [self.story_acts, self.vectors, self.vectors_meta, self.results]


@dataclass(frozen=True)
class LabelFiles:
    dir: Path

    @property
    def labels(self) -> Path:
        return self.dir / "labels.json"

    @property
    def scores(self) -> Path:
        return self.dir / "scores.safetensors"

    def outputs(self) -> list[Path]:
        return [self.labels, self.scores]


@dataclass(frozen=True)
class CompareFiles:
    dir: Path

    @property
    def compare(self) -> Path:
        return self.dir / "compare.json"

    def outputs(self) -> list[Path]:
        return [self.compare]


@dataclass(frozen=True)
class ValidationFiles:
    """`emosae validate`'s folder: figures on an outside corpus (`emosae.validation`)."""

    dir: Path

    @property
    def json(self) -> Path:
        return self.dir / "validation.json"

    @property
    def markdown(self) -> Path:
        return self.dir / "validation.md"

    def outputs(self) -> list[Path]:
        return [self.json, self.markdown]


@dataclass(frozen=True)
class CalibrationFiles:
    """Strength calibrations of steering vectors (see `emosae.experiments.calibration`)."""

    dir: Path

    @property
    def calibration(self) -> Path:
        """{"probe": {emotion: calibration}, "sae": {...}, "config": {...}}."""
        return self.dir / "calibration.json"

    def outputs(self) -> list[Path]:
        return [self.calibration]


@dataclass(frozen=True)
class ExperimentFiles:
    dir: Path

    def result(self, name: str) -> Path:
        """`scenarios`, `intensity`, `preferences`, `generation` or `pressure`."""
        return self.dir / f"{name}.json"


@dataclass(frozen=True)
class ReportFiles:
    dir: Path

    @property
    def index(self) -> Path:
        return self.dir / "index.html"

    @property
    def headline(self) -> Path:
        return self.dir / "headline.json"

    def plot(self, name: str) -> Path:
        return self.dir / f"{name}.png"

    def trace(self, name: str) -> Path:
        """The per-token heatmap page of a traced conversation."""
        return self.dir / f"trace_{name}.html"


@dataclass(frozen=True)
class ModelCacheFiles:
    """A converted model in the user cache (see `emosae.lm.models`)."""

    dir: Path

    @property
    def weights(self) -> Path:
        return self.dir / "model.safetensors"

    @property
    def meta(self) -> Path:
        """Format, source, TransformerLens config and the weights' sha256."""
        return self.dir / "meta.json"

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer"

    def hashes(self) -> dict[str, str]:
        """sha256 of every file but meta.json (weights, tokenizer, chat template)."""
        from emosae.core.io import sha256_file

        return {
            p.relative_to(self.dir).as_posix(): sha256_file(p)
            for p in files_in(self.dir)
            if p != self.meta
        }


def vector_files(path: Path) -> tuple[Path, Path]:
    """A saved steering vector: `<path>.safetensors` (tensors) and `<path>.json` (meta)."""
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


@dataclass(frozen=True)
class RunLayout:
    """A run folder (or a shipped checkpoint folder): the path of every artifact."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def dashboard(self) -> DashboardFiles:
        return DashboardFiles(self.root / "dashboard")

    @property
    def stages(self) -> Path:
        return self.root / "stages.json"

    @property
    def cache(self) -> CacheFiles:
        return CacheFiles(self.root / "activations")

    @property
    def sae(self) -> SAEFiles:
        return SAEFiles(self.root / "sae")

    @property
    def probes(self) -> ProbeFiles:
        return ProbeFiles(self.root / "probes")

    @property
    def labels(self) -> LabelFiles:
        return LabelFiles(self.root / "labels")

    @property
    def compare(self) -> CompareFiles:
        return CompareFiles(self.root / "compare")

    @property
    def validation(self) -> ValidationFiles:
        return ValidationFiles(self.root / "validation")

    @property
    def calibrate(self) -> CalibrationFiles:
        return CalibrationFiles(self.root / "calibrate")

    @property
    def experiments(self) -> ExperimentFiles:
        return ExperimentFiles(self.root / "experiments")

    @property
    def report(self) -> ReportFiles:
        return ReportFiles(self.root / "report")

    @property
    def metrics(self) -> Path:
        """Shipped checkpoints: SAE metrics and headline numbers."""
        return self.root / "metrics.json"

    @property
    def provenance(self) -> Path:
        """Shipped checkpoints: the command and code version that made them."""
        return self.root / "PROVENANCE.json"


SHIPPED_MODEL = "smollm2-135m-instruct"
_PACKAGE = Path(__file__).resolve().parents[1]


def shipped_checkpoint(model: str = SHIPPED_MODEL) -> Path:
    """The checkpoint folder shipped for `model`: inside the installed package
    (`emosae/_checkpoints/`, where a wheel puts the repository's `checkpoints/`), else
    the source checkout's `checkpoints/` (editable installs)."""
    installed = _PACKAGE / "_checkpoints" / model
    return installed if installed.exists() else source_checkpoints() / model


def source_checkpoints() -> Path:
    """`checkpoints/` of the source checkout this package runs from (where `--ship`
    writes; absent in a wheel install)."""
    return _PACKAGE.parent / "checkpoints"


def shipped_name(path: str | Path) -> str | None:
    """The name of the shipped checkpoint `path` lies in (or is), or None: the installed
    package (a wheel's `_checkpoints/<model>`) or the source checkout's `checkpoints/`.
    emosae never writes there except `emosae run --ship`."""
    path = Path(path).resolve()
    for root in (_PACKAGE / "_checkpoints", source_checkpoints()):
        if path.is_relative_to(root.resolve()) and path != root.resolve():
            return path.relative_to(root.resolve()).parts[0]
    return None


def in_package(path: str | Path) -> bool:
    """Whether `path` lies in the installed package or a shipped checkpoint."""
    p = Path(path).resolve()
    return p.is_relative_to(_PACKAGE) or shipped_name(p) is not None


def user_home() -> Path:
    """emosae's own folder for what a user makes with the shipped checkpoints (their
    calibrations): `$EMOSAE_HOME`, else `~/.cache/emosae`."""
    return Path(os.environ.get("EMOSAE_HOME") or Path.home() / ".cache" / "emosae")


def user_calibration(checkpoint: str) -> RunLayout:
    """Where `emosae steer --calibrate --save` keeps a calibration of the shipped
    `checkpoint`'s vectors (its `calibrate/calibration.json`): the shipped one stays
    read-only, and `load_directions()` prefers this one."""
    return RunLayout(user_home() / "calibrations" / checkpoint)


@dataclass(frozen=True)
class DashboardFiles:
    """Static feature pages of a run (see `emosae.dashboard`): index.html, one
    feature_<i>.html per feature, neuronpedia.json (Neuronpedia's feature-upload shape)."""

    dir: Path

    @property
    def index(self) -> Path:
        return self.dir / "index.html"

    def feature(self, i: int) -> Path:
        return self.dir / f"feature_{i}.html"

    @property
    def neuronpedia(self) -> Path:
        return self.dir / "neuronpedia.json"

    def outputs(self) -> list[Path]:
        return files_in(self.dir, "*.html") + [self.neuronpedia]
