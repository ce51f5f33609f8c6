"""`emosae dashboard`: static feature pages of a run (one per feature, an index grouped
by concept) and their Neuronpedia export, written into the run's dashboard folder."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from emosae.core.errors import EmosaeError


def add_dashboard_parser(
    sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], None]]
) -> None:
    d = sub.add_parser("dashboard", help="static feature pages of a run (+ Neuronpedia export)")
    d.add_argument("--run", default="runs/default", help="run folder of `emosae run`")
    d.add_argument(
        "--features", type=int, nargs="+", default=None, help="default: every labelled feature"
    )
    d.add_argument("--out", default=None, help="dashboard folder (default: RUN/dashboard)")
    d.add_argument("--model", default=None, help="the run's model (default: the SAE's own)")
    handlers["dashboard"] = dashboard_command


def dashboard_command(args: argparse.Namespace) -> None:
    from pathlib import Path

    from emosae.core import folders, io
    from emosae.core.layout import DashboardFiles, RunLayout
    from emosae.dashboard import build_dashboard
    from emosae.dashboard.data import check_features
    from emosae.lm.models import load_model

    L = RunLayout(args.run)
    if not L.root.is_dir():
        raise EmosaeError(
            f"no run folder at {args.run}; make one with `emosae run --out {args.run}`"
        )
    if not L.sae.cfg.exists():
        raise EmosaeError(f"{L.root} has no trained SAE ({L.sae.cfg} is missing); run `emosae run`")
    if not L.labels.labels.exists():
        raise EmosaeError(
            f"{L.root} has no feature labels ({L.labels.labels} is missing); "
            f"run `emosae labels --run {args.run}`"
        )
    out = DashboardFiles(Path(args.out)) if args.out else L.dashboard
    folders.check_claimable(out.dir, "dashboard")
    d_sae = io.read_json(L.sae.cfg).get("d_sae")
    if args.features and isinstance(d_sae, int):  # before the model loads: fail at once
        check_features(args.features, d_sae)
    model = args.model or io.read_json(L.sae.provenance).get("model")
    with folders.lock(out.dir):
        index = build_dashboard(
            L.sae,
            L.labels,
            L.probes,
            L.cache,
            out,
            load_model(model),
            feats=args.features,
            title=f"emosae features: {L.root.name}",
        )
    print(f"dashboard written to {index}")
