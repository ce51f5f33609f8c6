"""`emosae studio`: the local web app (chat, per-token readings, steering sliders and a
run's feature pages; see `emosae.studio`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def add_studio_parser(
    sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], None]]
) -> None:
    s = sub.add_parser(
        "studio", help="a local web app: chat, token-by-token readings, steering, features"
    )
    s.add_argument(
        "--directions",
        default=None,
        help="run, checkpoint or probe folder (default: --run's, else shipped)",
    )
    s.add_argument("--run", default=None, help="run folder: its SAE features and dashboard pages")
    s.add_argument("--kind", default="probe", choices=["probe", "sae"])
    s.add_argument("--model", default=None)
    s.add_argument("--port", type=int, default=8765)
    s.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    handlers["studio"] = studio_command


def studio_command(args: argparse.Namespace) -> None:
    from emosae.studio.server import check_port, serve
    from emosae.studio.session import Studio

    started = time.monotonic()
    check_port(args.host, args.port)  # before minutes of loading, not after
    studio = Studio.load(args.directions, args.run, args.model, args.kind)
    print(f"emosae studio: {studio.info()['model']}, {len(studio.vecs)} concepts; Ctrl+C stops it")
    serve(studio, args.host, args.port, started=started)
