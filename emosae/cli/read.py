"""`emosae read`: read concepts out of a prompt (a user turn, read at the token before
the reply) or a plain text (read as the mean from the probe's skip on); print the top
concepts there and, with --html, write the per-token heatmap page."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from emosae.core.errors import EmosaeError


def add_read_parser(
    sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], None]]
) -> None:
    r = sub.add_parser("read", help="read concepts out of a prompt or text, token by token")
    what = r.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="a user message (read before the assistant's reply)")
    what.add_argument("--text", help="plain text (read as the mean from the probe's skip on)")
    r.add_argument("--concepts", nargs="+", default=None, help="concepts to read (default: all)")
    r.add_argument(
        "--directions", default=None, help="run, checkpoint or probe folder (default: shipped)"
    )
    r.add_argument("--kind", default="probe", choices=["probe", "sae"])
    r.add_argument("--layer", type=int, default=None, help="probe layer (default: the folder's)")
    r.add_argument("--top", type=int, default=8, help="concepts printed")
    r.add_argument("--html", default=None, help="write the per-token heatmap page here")
    r.add_argument("--model", default=None)
    handlers["read"] = read_command


def read_command(args: argparse.Namespace) -> None:
    from pathlib import Path

    from emosae.core import io
    from emosae.lm.models import load_model
    from emosae.reading.page import trace_page
    from emosae.reading.trace import read
    from emosae.steering.directions import load_directions

    if args.top < 1:
        raise EmosaeError(f"--top must be >= 1, not {args.top}")
    if args.html and not args.html.endswith((".html", ".htm")):
        raise EmosaeError(f"--html must name an .html file, not {args.html!r}")
    if args.html:
        io.check_creatable(str(Path(args.html).parent) or ".")
    vecs = load_directions(args.directions, kind=args.kind, layer=args.layer)
    names = args.concepts or list(vecs)
    unknown = [c for c in names if c not in vecs]
    if unknown:
        raise EmosaeError(f"unknown concept {unknown[0]!r}; known: {', '.join(vecs)}")
    model = load_model(args.model)
    what = args.text if args.text is not None else [{"role": "user", "content": args.prompt}]
    reading = read(model, what, {c: vecs[c] for c in names})
    where = "before the reply" if reading.kind == "conversation" else "text mean"
    print(f"top concepts ({where}, {reading.hook}, readout units):")
    for name, v in reading.top(args.top):
        print(f"  {name:<16} {v:+.2f}")
    if args.html:
        page = trace_page(
            reading.to_json(), title=f"emosae read: {(args.prompt or args.text)[:60]}"
        )
        print(f"wrote {io.write_text(args.html, page)}")
