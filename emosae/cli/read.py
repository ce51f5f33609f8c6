"""`emosae read`: read concepts out of a prompt (a user turn, read at the token before
the reply) or a plain text (read as the mean from the probe's skip on); print the top
concepts there and, with --html, write the per-token heatmap page. With --input FILE
--out OUT it reads a whole dataset instead (cli/read_many.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from emosae.cli.read_many import add_dataset_args, read_dataset_command, wants_dataset
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
    r.add_argument(
        "--top", type=int, default=8, help="concepts printed (--input: records per concept)"
    )
    r.add_argument(
        "--html", default=None, help="the per-token heatmap page (--input: the summary page)"
    )
    r.add_argument(
        "--force", action="store_true", help="replace an output file emosae did not write"
    )
    r.add_argument("--model", default=None)
    add_dataset_args(r, what)  # --input FILE --out OUT: a whole dataset (cli/read_many.py)
    handlers["read"] = read_command


def read_command(args: argparse.Namespace) -> None:
    if wants_dataset(args):
        return read_dataset_command(args)
    from pathlib import Path

    from emosae.core import folders
    from emosae.lm.chat import check_text
    from emosae.lm.models import load_model
    from emosae.reading.page import trace_page
    from emosae.reading.trace import read
    from emosae.steering.directions import load_directions

    if args.top < 1:
        raise EmosaeError(f"--top must be >= 1, not {args.top}")
    if args.html and not args.html.endswith((".html", ".htm")):
        raise EmosaeError(f"--html must name an .html file, not {args.html!r}")
    if args.prompt is not None:
        check_text(args.prompt, "--prompt")
    if args.text is not None:
        check_text(args.text, "--text")
    if args.html:
        folders.check_output_file(Path(args.html), args.force)
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
        print(f"wrote {folders.write_output_text(args.html, page, args.force)}")
