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
    s.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a further name the browser may reach the studio by (the Host header; repeatable); "
        "loopback names, the --host address and, with 0.0.0.0, this machine's names and "
        "addresses are always allowed",
    )
    s.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="the longest conversation the studio replies to, in tokens (default: 2048, "
        "shown in the page)",
    )
    handlers["studio"] = studio_command


def studio_command(args: argparse.Namespace) -> None:
    from emosae.studio.server import check_port, serve
    from emosae.studio.session import Studio

    started = time.monotonic()
    check_port(args.host, args.port)  # before minutes of loading, not after
    from emosae.core.errors import EmosaeError

    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise EmosaeError(f"--max-prompt-tokens must be at least 1, not {args.max_prompt_tokens}")
    studio = Studio.load(args.directions, args.run, args.model, args.kind, args.max_prompt_tokens)
    print(f"emosae studio: {studio.info()['model']}, {len(studio.vecs)} concepts; Ctrl+C stops it")
    serve(studio, args.host, args.port, started=started, allow_hosts=args.allow_host)
