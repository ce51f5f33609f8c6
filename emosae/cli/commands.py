"""Pipeline subcommands of the `emosae` console command. Each one's flags are its
config dataclass (through simple_parsing), so flags and config never drift apart."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.errors import EmosaeError


def _parse_dataclass(cls: type, argv: list[str], prog: str, default: Any = None) -> Any:
    import simple_parsing as sp

    p = sp.ArgumentParser(prog=prog, add_config_path_arg=False)
    p.add_arguments(cls, dest="cfg", default=default)
    try:
        return p.parse_args(argv).cfg
    except TypeError as e:
        raise EmosaeError(f"bad arguments: {e}") from None


def _run(args: argparse.Namespace) -> None:
    from emosae.core import distributed
    from emosae.pipeline.config import RunConfig, preset
    from emosae.pipeline.runner import run_pipeline

    if distributed.env_world_size() > 1:
        raise EmosaeError(
            "emosae run is a single-process pipeline; under torchrun use `emosae cache` and "
            "`emosae train`, the stages that scale out"
        )
    cfg = _parse_dataclass(RunConfig, args.rest, "emosae run", default=preset(args.preset))
    head = run_pipeline(cfg, only=tuple(args.only or ()))
    if args.ship:
        from emosae.core.layout import SHIPPED_MODEL, source_checkpoints
        from emosae.pipeline.ship import ship

        if not source_checkpoints().parent.joinpath("pyproject.toml").exists():
            raise EmosaeError("--ship writes into checkpoints/ of a source checkout; none here")
        cmd = " ".join(["emosae run --preset", args.preset, *args.rest, "--ship"])
        print(f"shipped to {ship(cfg.out, source_checkpoints() / SHIPPED_MODEL, cmd)}")
    print("\nHeadline numbers (paper | here):")
    for r in head["rows"]:
        print(f"  {r['what']}: {r['paper']} | {r['here']}")
    print(f"\nOutputs in {head['out']}/ ; open {head['out']}/report/index.html")


def _cache(args: argparse.Namespace) -> None:
    from emosae.core import distributed
    from emosae.sae.cache import CacheJob, cache_activations

    out = cache_activations(_parse_dataclass(CacheJob, args.rest, "emosae cache"))
    if distributed.env_rank() == 0:  # under torchrun, rank 0 speaks for all
        print(f"cache written to {out}")


def _train(args: argparse.Namespace) -> None:
    from emosae.core.io import read_json
    from emosae.core.layout import SAEFiles
    from emosae.sae.config import TrainJob
    from emosae.sae.training import train_sae

    for name, folder in train_sae(_parse_dataclass(TrainJob, args.rest, "emosae train")).items():
        m = read_json(SAEFiles(Path(folder)).metrics)
        ce = f"  CE recovered {m['ce_loss_recovered']:.3f}" if "ce_loss_recovered" in m else ""
        print(
            f"{name}: {folder}  EV {m['explained_variance']:.3f}  L0 {m['l0']:.1f}  "
            f"dead {m['dead_fraction']:.3f}{ce}"
        )


def _probes(args: argparse.Namespace) -> None:
    from emosae.probes.vectors import ProbeJob, run_probe_job

    job = _parse_dataclass(ProbeJob, args.rest, "emosae probes")
    res = run_probe_job(job)
    for r in res["per_layer"]:
        g = r["diffmean_geometry"]
        geo = f"  PC1~valence r {g['pc1_valence_r']:.2f}" if g else ""
        print(
            f"layer {r['layer']:2d}: diffmean top1 {r['diffmean_top1']:.3f}  "
            f"logistic top1 {r['logistic_top1']:.3f}{geo}"
        )
    n = res["n_heldout_stories"]
    print(
        f"chance top1 {res['chance_top1']:.3f}; {n} held-out stories; best layer {res['best_layer']}"
    )
    print(f"vectors in {job.out}; read them with emosae.load_directions({job.out!r})")


def _labels(args: argparse.Namespace) -> None:
    from emosae.core.layout import LabelFiles
    from emosae.data.concepts import load_concept_set
    from emosae.features.labelling import label_features
    from emosae.features.labels import LabelConfig
    from emosae.lm.models import load_model
    from emosae.sae.training import load_sae

    cfg = _parse_dataclass(LabelConfig, args.rest, "emosae labels")
    cs = load_concept_set(args.concepts) if args.concepts else None
    if args.sae:  # any sae-lens SAE, with no run around it
        if not args.out:
            raise EmosaeError("--sae needs --out (the label folder to write)")
        folders.check_claimable(args.out, "labels")
        io.check_creatable(args.out)
        sae_files = _sae_folder(args.sae)
        load_sae(sae_files.dir)  # a bad SAE is named before the model loads
        out = LabelFiles(Path(args.out))
        with folders.lock(args.out):
            res = label_features(None, sae_files, None, out, load_model(args.model), cfg, cs)
    else:
        L = _existing_run(args.run)
        out = LabelFiles(Path(args.out)) if args.out else L.labels
        if args.out:
            folders.check_claimable(args.out, "labels")
        with folders.lock(L.root):
            model = load_model(args.model)
            res = label_features(L.probes, L.sae, L.cache, out, model, cfg, cs)
            if cfg.transfer and not args.out and cs is None:
                from emosae.validation.run import transfer_run_labels

                transfer_run_labels(model, L.root, cfg.outside, cfg.permutations, cfg.fdr_q or 0.05)
    print(json.dumps(res["counts"]))
    print(_thresholds_line(res))
    n = res.get("null")
    if n:
        print(
            f"false-discovery rate {n['fdr']:.3f} ({n['expected_false_labels']:.1f} of "
            f"{n['observed_labelled_features']} labels expected by chance, "
            f"{n['permutations']} shuffles)"
        )


def _thresholds_line(res: dict[str, Any]) -> str:
    """The thresholds a labels.json used and how they were set (older files: as given)."""
    th, ch = res.get("thresholds", {}), res.get("threshold_choice") or {}
    how = "fixed"
    if ch.get("q") is not None:
        met = "" if ch.get("met") else ", none met it: the strictest"
        how = f"chosen from {len(ch['grid'])} at FDR <= {ch['q']}{met}"
    extra = ""
    if "min_margin" in th:
        style = "on" if th.get("style_control") else "off"
        extra = f", margin >= {th['min_margin']}, style control {style}"
    return (
        f"thresholds ({how}): held-out AUROC >= {th.get('heldout_auroc')}, d' >= "
        f"{th.get('heldout_dprime')}, train AUROC >= {th.get('train_auroc')}{extra}"
    )


def _sae_folder(ref: str):
    """An SAE folder given as a path, or a sae-lens `release/sae_id` (through
    `SAE.from_pretrained`, where the hub is reachable) saved into the user cache."""
    from emosae.core.layout import SAEFiles

    p = Path(ref).expanduser()
    if p.exists():
        return SAEFiles(p)
    if "/" not in ref or ref.startswith(("/", ".", "~")):
        raise EmosaeError(f"{ref}: no such SAE folder (or give a sae-lens release/sae_id)")
    return SAEFiles(_pretrained(ref))


def _pretrained(ref: str) -> Path:
    from sae_lens import SAE

    from emosae.lm.models import cache_root

    release, sae_id = ref.split("/", 1)
    dest = cache_root() / "saes" / release / sae_id.replace("/", "__")
    if not (dest / "cfg.json").exists():
        try:
            sae = SAE.from_pretrained(release, sae_id, device="cpu")
        except Exception as e:  # noqa: BLE001 - hub and registry errors come in many types
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EmosaeError(
                f"{ref}: not an SAE folder, and sae-lens's registry cannot load it: {first}"
            ) from None
        with io.atomic_dir(dest) as tmp:
            sae.save_model(str(tmp))
    return dest


def _validate(args: argparse.Namespace) -> None:
    from emosae.validation.report import readout_table
    from emosae.validation.run import ValidateJob, run_validate_job

    job = _parse_dataclass(ValidateJob, args.rest, "emosae validate")
    res = run_validate_job(job)
    if "skipped" in res:
        raise EmosaeError(f"nothing to validate: {res['skipped']}")
    print("\n".join(readout_table(res)))
    lab = res.get("labels")
    if lab:
        sc = lab["single_concept"]
        print(
            f"labels: {sc['transfer']} of {sc['n']} single-concept labels transfer (outside "
            f"AUROC >= {lab['threshold']['threshold']:.2f}, FDR {lab['threshold']['fdr']:.3f}); "
            f"best feature per concept, mean outside AUROC {lab['best_mean_auroc'][0]:.3f}"
        )
    print(f"written to {job.out}/validation.md")


def _compare(args: argparse.Namespace) -> None:
    from emosae.features.compare import compare_features

    L = _existing_run(args.run)
    with folders.lock(L.root):
        res = compare_features(L.probes, L.sae, L.labels, L.compare)
    print(json.dumps(res["summary"], indent=1))


def _existing_run(run: str):
    from emosae.core.layout import RunLayout

    folders.check_claimable(run, "run")
    L = RunLayout(run)
    if not L.root.is_dir():
        raise EmosaeError(f"no run folder at {run}; make one with `emosae run --out {run}`")
    return L


def _export(args: argparse.Namespace) -> None:
    from emosae.core.layout import vector_files
    from emosae.steering.directions import load_directions

    out = Path(args.out)
    if out.is_dir():
        raise EmosaeError(f"output {out} is a folder; name a file")
    for f in [out] if args.format == "gguf" else vector_files(out):
        folders.check_output_file(f, args.force)  # before any work
    vecs = load_directions(args.directions, kind=args.kind)
    if args.concept not in vecs:
        raise EmosaeError(f"unknown concept {args.concept!r}; known: {', '.join(sorted(vecs))}")
    v = vecs[args.concept]
    if args.format == "gguf":
        from emosae.steering.export import export_gguf

        path = export_gguf(v, out, force=args.force)
        print(f"wrote {path} (llama-cli --control-vector-scaled FILE S, S relative)")
    else:
        print(f"wrote {v.save(out, force=args.force)} and its .json")


def _steer(args: argparse.Namespace) -> None:
    from emosae.cli.steer import steer_command

    steer_command(args)


PASSTHROUGH = {"run", "cache", "train", "probes", "labels", "validate"}
"""Subcommands whose remaining flags are their config dataclass's (simple_parsing)."""


def add_subcommands(
    sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], None]]
) -> None:
    r = sub.add_parser("run", help="run the whole pipeline (resumable)", add_help=False)
    r.add_argument("--preset", default="default", choices=["smoke", "default", "ship", "full"])
    r.add_argument("--only", nargs="*", help="run only these stages")
    r.add_argument(
        "--ship",
        action="store_true",
        help="copy the results into checkpoints/ as the shipped defaults",
    )
    handlers["run"] = _run
    for name, fn, hlp in (
        ("cache", _cache, "cache residual activations"),
        ("train", _train, "train SAE(s) from a cache"),
        ("probes", _probes, "fit and validate concept vectors"),
        ("validate", _validate, "score directions and labels on an outside corpus"),
    ):
        sub.add_parser(name, help=hlp, add_help=False)
        handlers[name] = fn
    for name, fn, hlp in (
        ("labels", _labels, "label SAE features of a run"),
        ("compare", _compare, "compare probes and SAE features"),
    ):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--run", default="runs/default", help="run folder of `emosae run`")
        s.add_argument("--model", default=None)
        handlers[name] = fn
        if name == "labels":
            s.add_argument(
                "--concepts", default=None, help="concept-set folder (default: the run's)"
            )
            s.add_argument("--out", default=None, help="label folder (default: RUN/labels)")
            s.add_argument("--sae", default=None, help="any sae-lens SAE folder or release/sae_id")
    from emosae.cli.read import add_read_parser
    from emosae.cli.steer import add_parser

    add_parser(sub)
    add_read_parser(sub, handlers)
    from emosae.cli.dashboard import add_dashboard_parser

    add_dashboard_parser(sub, handlers)
    from emosae.cli.studio import add_studio_parser

    add_studio_parser(sub, handlers)
    e = sub.add_parser("export", help="export a steering vector (llama.cpp GGUF or safetensors)")
    e.add_argument(
        "--concept", "--emotion", dest="concept", required=True, help="(--emotion: its old name)"
    )
    e.add_argument("--format", default="gguf", choices=["gguf", "safetensors"])
    e.add_argument("--out", required=True, help="file (gguf) or path stem (safetensors)")
    e.add_argument("--kind", default="probe", choices=["probe", "sae"])
    e.add_argument("--directions", default=None, help="run or checkpoint folder (default: shipped)")
    e.add_argument("--force", action="store_true", help="replace a file emosae did not write")
    handlers["export"] = _export
    handlers["steer"] = _steer
