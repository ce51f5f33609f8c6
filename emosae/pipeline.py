"""`emosae run`: every stage on the embedded default, resumable by content hash.

Stages, in order: cache -> train -> probes -> labels -> compare -> experiments -> report.
Each stage's key is a hash of its config and of its inputs' recorded output hashes;
`<out>/stages.json` records, per finished stage, that key and the sha256 of every
output file. A rerun skips a stage whose key matches and whose outputs verify, so a
killed run resumes with the first unfinished stage (the cache stage also resumes
mid-way, shard by shard), and a corrupted output is recomputed with a message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from emosae.activations import CacheConfig
from emosae.contexts import CorpusConfig
from emosae.emotion_vectors import VectorsConfig
from emosae.errors import EmosaeError
from emosae.experiments import ExperimentConfig
from emosae.labels import LabelConfig
from emosae.provenance import hash_json, sha256_file
from emosae.story_acts import ReadConfig
from emosae.tracking import WandbConfig
from emosae.training import SAEConfig, TrainConfig

STAGES = ("cache", "train", "probes", "labels", "compare", "experiments", "report")
Preset = Literal["smoke", "default", "full"]


@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline."""

    out: str = "runs/default"
    model: str | None = None
    layer: int = 15
    """SAE layer (half depth of SmolLM2's 30 layers)."""
    device: str | None = None
    corpus: CorpusConfig = field(default_factory=lambda: CorpusConfig(max_tokens=300_000))
    cache_dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    sae: SAEConfig = field(default_factory=lambda: SAEConfig(d_sae=3072, k=64))
    epochs: float = 2.0
    batch_size: int = 1024
    eval_contexts: int = 32
    layer_stride: int = 3
    probe_layers: tuple[int, ...] = ()
    read: ReadConfig = field(default_factory=ReadConfig)
    max_stories_per_emotion: int = 0
    """0: all stories; else at most this many per emotion (split kept proportional)."""
    max_dialogues: int = 0
    labels: LabelConfig = field(default_factory=LabelConfig)
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)
    skip_experiments: tuple[str, ...] = ()
    """Experiments to skip: scenarios, intensity, preferences, generation, pressure."""
    wandb: WandbConfig = field(default_factory=WandbConfig)


def preset(name: Preset, **overrides: Any) -> RunConfig:
    """smoke: < 3 min on 2 CPU cores (CI); default: < 25 min on 2 cores; full: GPU-sized."""
    if name == "smoke":
        cfg = RunConfig(
            out="runs/smoke",
            corpus=CorpusConfig(max_tokens=16_384, emotion_every=4),
            sae=SAEConfig(d_sae=1152, k=32),
            epochs=2.0,
            batch_size=512,
            eval_contexts=8,
            probe_layers=(5, 10, 15),
            read=ReadConfig(max_tokens=96, batch_size=16),
            max_stories_per_emotion=6,
            max_dialogues=48,
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
    elif name == "default":
        cfg = RunConfig()
    elif name == "full":
        cfg = RunConfig(
            out="runs/full",
            corpus=CorpusConfig(max_tokens=20_000_000, context_len=256),
            sae=SAEConfig(d_sae=16384, k=48),
            epochs=1.0,
            batch_size=4096,
            eval_contexts=256,
            layer_stride=1,
            cache_dtype="bfloat16",
            experiments=ExperimentConfig(preference_pairs=4032, steer_pairs=2000, gen_prompts=30),
        )
    else:
        raise EmosaeError(f"unknown preset {name!r}; choose smoke, default or full")
    return replace(cfg, **overrides) if overrides else cfg


class StageLog:
    """`stages.json`: per finished stage, its key and its outputs' sha256."""

    def __init__(self, out: Path):
        self.path = out / "stages.json"
        try:
            self.data: dict[str, Any] = (
                json.loads(self.path.read_text()) if self.path.exists() else {}
            )
        except json.JSONDecodeError:
            print(f"emosae: {self.path} is corrupt; all stages will be checked afresh")
            self.data = {}

    def valid(self, stage: str, key: str) -> bool:
        rec = self.data.get(stage)
        if not rec or rec["key"] != key:
            return False
        for rel, sha in rec["outputs"].items():
            p = self.path.parent / rel
            if not p.exists():
                print(f"emosae: {stage}: output {rel} is missing; recomputing the stage")
                return False
            if sha256_file(p) != sha:
                print(
                    f"emosae: {stage}: output {rel} is corrupted (sha256 mismatch); recomputing the stage"
                )
                return False
        return True

    def record(self, stage: str, key: str, outputs: list[Path], seconds: float) -> None:
        root = self.path.parent
        self.data[stage] = {
            "key": key,
            "seconds": round(seconds, 1),
            "outputs": {str(p.relative_to(root)): sha256_file(p) for p in outputs},
        }
        tmp = self.path.with_name("stages.json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def outputs_hash(self, stage: str) -> str:
        return hash_json(self.data.get(stage, {}).get("outputs", {}))


def _files(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.endswith(".tmp"))


def run_pipeline(
    cfg: RunConfig, *, only: tuple[str, ...] = (), model: Any = None
) -> dict[str, Any]:
    """Run (or resume) every stage; returns the headline numbers."""
    from emosae.models import load_model

    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write_test").write_text("")
        (out / ".write_test").unlink()
    except OSError as e:
        raise EmosaeError(f"cannot write to output folder {out}: {e.strerror}") from None
    log = StageLog(out)
    model_holder: dict[str, Any] = {"m": model}

    def get_model():
        if model_holder["m"] is None:
            model_holder["m"] = load_model(cfg.model, device=cfg.device)
        return model_holder["m"]

    hook = f"blocks.{cfg.layer}.hook_resid_post"
    dirs = {s: out / s for s in STAGES}
    dirs["cache"] = out / "activations"
    dirs["train"] = out / "sae"
    vcfg = VectorsConfig(
        out=str(dirs["probes"]),
        model=cfg.model,
        layers=cfg.probe_layers,
        layer_stride=cfg.layer_stride,
        token_layer=cfg.layer,
        read=cfg.read,
        device=cfg.device,
    )
    tcfg = TrainConfig(
        cache=str(dirs["cache"]),
        hook=hook,
        out=str(dirs["train"]),
        sae=cfg.sae,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        device=cfg.device,
        eval_contexts=cfg.eval_contexts,
        wandb=cfg.wandb,
    )
    stage_cfg = {
        "cache": CacheConfig(
            out=str(dirs["cache"]),
            model=cfg.model,
            layers=(cfg.layer,),
            corpus=cfg.corpus,
            dtype=cfg.cache_dtype,
            device=cfg.device,
        ),
        "train": tcfg,
        "probes": (vcfg, cfg.max_stories_per_emotion, cfg.max_dialogues),
        "labels": cfg.labels,
        "compare": None,
        "experiments": (cfg.experiments, cfg.skip_experiments),
        "report": None,
    }
    deps = {
        "cache": [],
        "train": ["cache"],
        "probes": [],
        "labels": ["train", "probes", "cache"],
        "compare": ["train", "probes", "labels"],
        "experiments": ["probes", "labels", "train"],
        "report": ["cache", "train", "probes", "labels", "compare", "experiments"],
    }
    actions: dict[str, Callable[[], list[Path]]] = {
        "cache": lambda: _stage_cache(stage_cfg["cache"], get_model()),
        "train": lambda: _stage_train(tcfg, get_model()),
        "probes": lambda: _stage_probes(vcfg, cfg, get_model()),
        "labels": lambda: _stage_labels(dirs, cfg, get_model()),
        "compare": lambda: _stage_compare(dirs),
        "experiments": lambda: _stage_experiments(dirs, cfg, get_model()),
        "report": lambda: _stage_report(out, cfg),
    }
    todo = [s for s in STAGES if not only or s in only]
    t_all = time.perf_counter()
    for i, stage in enumerate(todo, 1):
        key = hash_json(
            {
                "stage": stage,
                "cfg": asdict(stage_cfg[stage])
                if hasattr(stage_cfg[stage], "__dataclass_fields__")
                else repr(stage_cfg[stage]),
                "model": cfg.model,
                "inputs": {d: log.outputs_hash(d) for d in deps[stage]},
            }
        )
        if log.valid(stage, key):
            print(f"[{i}/{len(todo)}] {stage}: up to date, skipped")
            continue
        print(f"[{i}/{len(todo)}] {stage} ...", flush=True)
        t0 = time.perf_counter()
        outputs = actions[stage]()
        log.record(stage, key, outputs, time.perf_counter() - t0)
        print(f"[{i}/{len(todo)}] {stage}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    head = headline(out)
    head["wall_seconds_this_invocation"] = round(time.perf_counter() - t_all, 1)
    return head


def _stage_cache(c: CacheConfig, model: Any) -> list[Path]:
    from emosae.activations import cache_activations

    folder = cache_activations(c, model)
    return [folder / "manifest.json", folder / "documents.jsonl"]


def _stage_train(t: TrainConfig, model: Any) -> list[Path]:
    from emosae.training import train_sae

    folder = next(iter(train_sae(t, model=model).values()))
    return _files(folder)


def _stage_probes(v: VectorsConfig, cfg: RunConfig, model: Any) -> list[Path]:
    from emosae.emotion_vectors import fit_stage, read_stage

    p = read_stage(
        v, model, max_per_emotion=cfg.max_stories_per_emotion, max_dialogues=cfg.max_dialogues
    )
    fit_stage(v, p)
    d = Path(v.out)
    return [
        d / "story_acts.safetensors",
        d / "vectors.safetensors",
        d / "vectors.json",
        d / "results.json",
    ]


def _stage_labels(dirs: dict[str, Path], cfg: RunConfig, model: Any) -> list[Path]:
    from emosae.feature_stage import label_stage

    label_stage(dirs["probes"], dirs["train"], dirs["cache"], dirs["labels"], model, cfg.labels)
    return [dirs["labels"] / "labels.json", dirs["labels"] / "scores.safetensors"]


def _stage_compare(dirs: dict[str, Path]) -> list[Path]:
    from emosae.feature_stage import compare_stage

    compare_stage(dirs["probes"], dirs["train"], dirs["labels"], dirs["compare"])
    return [dirs["compare"] / "compare.json"]


def _stage_experiments(dirs: dict[str, Path], cfg: RunConfig, model: Any) -> list[Path]:
    from emosae.experiment_stage import run_experiments

    return run_experiments(dirs, cfg, model)


def _stage_report(out: Path, cfg: RunConfig) -> list[Path]:
    from emosae.report import write_report

    return write_report(out, cfg)


def ship(run: Path, dest: Path, command: str) -> Path:
    """Copy a finished run's SAE (as fp16), probe vectors, labels and metrics into
    `dest` (e.g. checkpoints/smollm2-135m-instruct), with the command that made them."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from emosae.provenance import code_version
    from emosae.report import headline_rows

    run, dest = Path(run), Path(dest)
    need = [
        run / "sae" / "cfg.json",
        run / "probes" / "vectors.json",
        run / "labels" / "labels.json",
    ]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise EmosaeError(f"cannot ship an unfinished run: missing {', '.join(missing)}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "sae").mkdir(parents=True)
    w = load_file(str(run / "sae" / "sae_weights.safetensors"))
    save_file(
        {k: v.to(torch.float16) for k, v in w.items()}, str(tmp / "sae" / "sae_weights.safetensors")
    )
    cfg = json.loads((run / "sae" / "cfg.json").read_text())
    cfg["dtype"] = "float16"
    (tmp / "sae" / "cfg.json").write_text(json.dumps(cfg))
    for f in ("emosae.json", "metrics.json"):
        shutil.copy(run / "sae" / f, tmp / "sae" / f)
    (tmp / "probes").mkdir()
    for f in ("vectors.safetensors", "vectors.json", "results.json"):
        shutil.copy(run / "probes" / f, tmp / "probes" / f)
    (tmp / "labels").mkdir()
    shutil.copy(run / "labels" / "labels.json", tmp / "labels" / "labels.json")
    (tmp / "metrics.json").write_text(
        json.dumps(
            {
                "sae": json.loads((run / "sae" / "metrics.json").read_text()),
                "headline": headline_rows(run),
            },
            indent=1,
        )
    )
    (tmp / "PROVENANCE.json").write_text(
        json.dumps(
            {"command": command, "code_version": code_version(), "source_run": str(run)}, indent=1
        )
    )
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def headline(out: Path) -> dict[str, Any]:
    """The headline numbers of a run (whatever stages have finished)."""
    from emosae.report import headline_rows

    return {"rows": headline_rows(out), "out": str(out)}
