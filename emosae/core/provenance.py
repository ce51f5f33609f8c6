"""The code version recorded in every artifact, and the source hash of the modules a
stage runs (what its stage key depends on)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import subprocess
import textwrap
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

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


# Stage keys hash the source of the modules a stage runs, not the git commit: an
# unrelated commit (a report module, a test) then reuses the cache and the SAE.

_PKG = Path(emosae.__file__).resolve().parent
RESOURCES = _PKG / "data" / "resources"


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return _PKG / "__init__.py"
    rel = Path(*parts)
    for p in (_PKG / rel / "__init__.py", _PKG / rel.with_suffix(".py")):
        if p.is_file():
            return p
    return None


def module_imports(name: str) -> set[str]:
    """The emosae modules that module `name` imports, function-local imports included
    (`from emosae.x import y` counts `emosae.x.y` when y is a module, and always its
    package `emosae.x`)."""
    path = _module_file(name)
    if path is None:
        return set()
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return _imports(ast.parse(path.read_text(encoding="utf-8")), pkg, name)


def function_imports(fn: Callable[..., Any]) -> set[str]:
    """The emosae modules imported inside function `fn` (a stage's local imports)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return _imports(tree, fn.__module__.rsplit(".", 1)[0], fn.__module__)


def _imports(tree: ast.AST, pkg: str, name: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("emosae"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            if not base.startswith("emosae"):
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}"))
    # the package root only holds the lazy API table and the version (hashed apart)
    return {m for m in out if m not in (name, "emosae") and _module_file(m) is not None}


@cache
def import_closure(roots: tuple[str, ...]) -> tuple[str, ...]:
    """`roots` and every emosae module they import, transitively, sorted."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in seen or _module_file(m) is None:
            continue
        seen.add(m)
        todo.extend(module_imports(m) - seen)
    return tuple(sorted(seen))


@cache
def source_hash(roots: tuple[str, ...]) -> str:
    """sha256 over the source of `roots` and their import closure; when the closure
    reads the bundled data (`emosae.data`), over those resource files too."""
    h = hashlib.sha256(emosae.__version__.encode())
    mods = import_closure(roots)
    files = [_module_file(m) for m in mods]
    if any(m == "emosae.data" or m.startswith("emosae.data.") for m in mods):
        files += sorted(p for p in RESOURCES.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(_PKG)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()
