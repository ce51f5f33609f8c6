"""Pipeline subcommands of the `emosae` console command (filled in stage by stage)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_subcommands(
    sub: argparse._SubParsersAction, handlers: dict[str, Callable[[argparse.Namespace], None]]
) -> None:
    """Register pipeline subcommands (none yet beyond the foundation's)."""
