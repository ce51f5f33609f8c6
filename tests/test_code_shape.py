"""The code's shape, as the architecture promises it (docs/architecture.md): small
modules and functions, logging instead of print, and one owner for each piece of
logic that used to be copied (run paths, atomic writes, hook names, padding)."""

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "emosae"
MODULES = sorted(PKG.rglob("*.py"))


def rel(p: Path) -> str:
    return p.relative_to(PKG).as_posix()


def test_every_subpackage_says_what_it_owns():
    for init in PKG.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{rel(init)} needs a docstring saying what it owns"


def test_modules_and_functions_fit_on_a_screen():
    for p in MODULES:
        src = p.read_text()
        assert len(src.splitlines()) <= 450, f"{rel(p)} has {len(src.splitlines())} lines"
        for f in ast.walk(ast.parse(src)):
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
                n = f.end_lineno - f.lineno + 1
                assert n <= 80, f"{rel(p)}:{f.lineno} {f.name} has {n} lines"


def calls(p: Path, name: str) -> list[int]:
    return [
        n.lineno
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def test_library_code_logs_instead_of_printing():
    bad = [
        f"{rel(p)}:{ln}"
        for p in MODULES
        if not rel(p).startswith("cli/")
        for ln in calls(p, "print")
    ]
    assert not bad, f"print() in library code: {bad}"


@pytest.mark.parametrize(
    "pattern, owner",
    [
        (r"os\.replace\(", "core/io.py"),  # atomic writes
        (r"hook_resid_post", "lm/hooks.py"),  # hook names built
        (r"\.split\(\"\.\"\)\[1\]", None),  # hook names parsed by hand
        (r"torch\.full\(\(len\(", "lm/hooks.py"),  # right padding
        (
            r"\"(manifest|vectors|labels|compare|results|stages|headline|metrics|emosae)\.json\"",
            "core/layout.py",
        ),
        (
            r"\"(activations|sae_weights\.safetensors|story_acts\.safetensors|index\.html)\"",
            "core/layout.py",
        ),
    ],
)
def test_one_owner_per_piece_of_logic(pattern, owner):
    rx = re.compile(pattern)
    found = sorted(
        f"{rel(p)}:{i}"
        for p in MODULES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if rx.search(line) and not line.lstrip().startswith(("#", '"""')) and rel(p) != owner
    )
    # docstrings may name the files; code may not build them
    found = [f for f in found if not _in_docstring(f)]
    assert not found, f"{pattern} outside {owner}: {found}"


def _in_docstring(where: str) -> bool:
    path, line = where.rsplit(":", 1)
    tree = ast.parse((PKG / path).read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            c = body[0].value
            if isinstance(c, ast.Constant) and isinstance(c.value, str):
                if c.lineno <= int(line) <= c.end_lineno:
                    return True
    return False


LAYERS = [
    {"cli"},
    {"studio"},
    {"pipeline"},
    {"experiments"},
    {"validation"},
    {"dashboard"},
    {"reading"},
    {"steering"},
    {"features"},
    {"probes"},
    {"sae"},
    {"data", "lm"},
    {"core"},
]
"""docs/architecture.md's layers, top to bottom: a subpackage imports only its own
modules and those of layers below it (function-local imports included)."""


def _subpackage_imports() -> dict[tuple[str, str], list[str]]:
    from emosae.core.provenance import module_imports

    edges: dict[tuple[str, str], list[str]] = {}
    for p in MODULES:
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) < 3:
            continue  # emosae/__init__ (the lazy table) and emosae/__main__
        name = ".".join(parts)
        for m in module_imports(name):
            dst = m.split(".")[1] if m.count(".") else None
            if dst and dst != parts[1]:
                edges.setdefault((parts[1], dst), []).append(f"{name} -> {m}")
    return edges


def test_imports_point_down_the_architecture_layers():
    tier = {pkg: i for i, group in enumerate(LAYERS) for pkg in group}
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert subpackages <= set(tier), f"subpackages missing from LAYERS: {subpackages - set(tier)}"
    bad = [
        f"{src} -> {dst} ({where[0]})"
        for (src, dst), where in sorted(_subpackage_imports().items())
        if tier[dst] <= tier[src]
    ]
    assert not bad, f"imports against the layers of docs/architecture.md: {bad}"
    for group in LAYERS:  # the architecture doc draws every layer
        for pkg in group:
            assert f"**`{pkg}`**" in (PKG.parent / "docs" / "architecture.md").read_text(), pkg


def test_public_api_is_typed_and_listed():
    """emosae/__init__.py's TYPE_CHECKING block imports exactly the lazy table (so
    editors and type checkers see the API), and dir() lists it."""
    import emosae

    tree = ast.parse((PKG / "__init__.py").read_text())
    typed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                typed.update({a.name: imp.module for a in imp.names})
    assert typed == emosae._LAZY
    assert sorted(emosae.__all__) == sorted([*emosae._LAZY, "__version__"])
    assert set(emosae._LAZY) <= set(dir(emosae))
    for name in emosae.__all__:
        assert getattr(emosae, name) is not None
