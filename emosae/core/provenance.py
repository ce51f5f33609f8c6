"""The code version recorded in every artifact and hashed into every stage key."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import emosae


@cache
def code_version() -> str:
    """Package version plus the git commit (and '.dirty') when run from a checkout
    (an installed wheel reports its version alone)."""
    root = Path(emosae.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return emosae.__version__
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{emosae.__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return emosae.__version__
