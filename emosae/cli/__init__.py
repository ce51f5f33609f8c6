"""The `emosae` console command: argument parsing, one-line errors, and the printing
that library code never does. Every pipeline subcommand's flags are its config
dataclass (through simple_parsing)."""

from emosae.cli.main import main

__all__ = ["main"]
