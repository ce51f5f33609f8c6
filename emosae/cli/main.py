"""The `emosae` console command. Subcommands grow with the pipeline.

Every EmosaeError (bad input) is printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from emosae.core.errors import EmosaeError


def _cmd_models(args: argparse.Namespace) -> None:
    from emosae.lm.models import DEFAULT_MODEL, EMBEDDED, list_models

    avail = list_models()
    for name, spec in EMBEDDED.items():
        mark = "installed" if name in avail else f"not installed: {spec.pip}"
        dflt = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{dflt}\t{mark}")
    for name in avail:
        if name not in EMBEDDED:
            print(f"{name}\tcached")
    print("Also accepted: any TransformerLens model name (needs the hub) or a local HF folder.")


def _cmd_smoke(args: argparse.Namespace) -> None:
    from emosae.cli.smoke import smoke

    smoke(model_name=args.model, prompt=args.prompt, device=args.device)


def build_parser() -> tuple[
    argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], None]]
]:
    p = argparse.ArgumentParser(
        prog="emosae",
        description="Find emotion concepts inside language models (probes, SAEs, steering).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], None]] = {}

    sub.add_parser("models", help="list the models available offline")
    handlers["models"] = _cmd_models

    s = sub.add_parser("smoke", help="load a model, chat one reply, summarise its residual stream")
    s.add_argument("--model", default=None, help="model name (default: the embedded SmolLM2)")
    s.add_argument("--prompt", default="What is the capital of France?")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    handlers["smoke"] = _cmd_smoke

    from emosae.cli import commands

    commands.add_subcommands(sub, handlers)
    return p, handlers


def main(argv: Sequence[str] | None = None) -> int:
    if os.environ.get("RANK", "0") != "0":
        # torchrun: progress bars from rank 0 only. tqdm reads this when first imported,
        # and importing torch (so emosae.core.distributed.env_rank) imports tqdm: read it here.
        os.environ.setdefault("TQDM_DISABLE", "1")
    from emosae.cli.commands import PASSTHROUGH

    parser, handlers = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in PASSTHROUGH:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.rest = extra
    if args.command is None:
        parser.print_help()
        return 0
    from emosae.core import distributed, log

    log.configure()
    # Under torchrun each rank prints its own errors: say which rank speaks.
    who = f"emosae[rank {distributed.env_rank()}]" if distributed.launched() else "emosae"
    try:
        handlers[args.command](args)
    except EmosaeError as e:
        print(f"{who}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{who}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
