"""Atomic writes and content hashes: the one place that writes a file to a temp name
and renames it into place, so a killed process never leaves a half-written artifact
under its real name. Readers that see a file can trust it is whole."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emosae.core.errors import EmosaeError

TMP_SUFFIX = ".tmp"
"""Suffix of files and folders being written; never listed as outputs."""


def tmp_path(path: str | Path) -> Path:
    """The temp name a file or folder is written under before it is renamed to `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to write a file (or folder) at a temp name beside `path`, then
    rename it onto `path`. On any error the temp is removed and `path` is untouched."""
    path = Path(path)
    tmp = _unique_tmp(path)  # never a name someone else may own: nothing is removed first
    try:
        write(tmp)
        normal_permissions(tmp)
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _unique_tmp(path: Path) -> Path:
    """A fresh temp name beside `path` (`.NAME.<random>.tmp`) that nothing holds now."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    os.unlink(name)  # ours, just made: `write` may make a file or a folder there
    return Path(name)


@contextmanager
def atomic_dir(path: str | Path, *, shared: bool = False) -> Iterator[Path]:
    """`with atomic_dir(p) as tmp:` fill the folder `tmp`; on success it replaces `p`.

    `shared=True` is for a folder that several processes may build at once (torchrun
    ranks converting a model into a shared home): each writes its own temp folder, and
    the first to finish wins; the others discard theirs and keep the winner's."""
    path = Path(path)
    if shared:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    else:
        tmp = tmp_path(path)
        _remove(tmp)
        tmp.mkdir(parents=True)
    try:
        yield tmp
        normal_permissions(tmp)
        if path.exists() and not shared:
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (shared and path.is_dir()):
                raise
    finally:
        _remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(path: Path) -> None:
    """Files 0666 and folders 0777 less the umask, as `open` and `mkdir` make them:
    safetensors writes 0600 files and mkdtemp 0700 folders, which breaks run folders
    shared by a group."""
    mask = _umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda t: t.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    """JSON (floats of numpy and torch scalars included), atomically."""
    return write_text(path, json.dumps(obj, indent=indent, default=float))


def round_floats(obj: Any, digits: int = 12) -> Any:
    """`obj` with every float rounded to `digits` significant digits: results that
    LAPACK computes with a reduction order varying between processes (least squares)
    then serialise to the same bytes, so reruns reproduce the file's hash."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [round_floats(v, digits) for v in obj]
    return obj


def save_tensors(
    path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """A safetensors file, atomically."""
    from safetensors.torch import save_file

    return write_atomic(path, lambda t: save_file(tensors, str(t), metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, Any]:
    """All tensors of a safetensors file; a missing or corrupt file is a one-line error."""
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise EmosaeError(f"{path} is missing")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise EmosaeError(f"{path} is corrupt ({str(e).splitlines()[0]})") from None


def read_json(path: str | Path) -> Any:
    """JSON from `path`; a missing or corrupt file is a one-line EmosaeError."""

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmosaeError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmosaeError(f"{path} is corrupt (not JSON: {e})") from None


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """sha256 of a JSON-serialisable object in canonical form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def check_creatable(path: str | Path) -> Path:
    """One-line error unless `path` can be created or written, leaving nothing behind:
    its nearest existing ancestor must be a folder we can write a file into. A real
    file is tried (then removed): `os.access` says yes to root everywhere, /proc too."""

    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if probe.is_file():
        raise EmosaeError(f"cannot write to output folder {path}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EmosaeError(f"cannot write to output folder {path}: {probe} is not writable")
    try:
        fd, name = tempfile.mkstemp(prefix=".write_test.", suffix=TMP_SUFFIX, dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise EmosaeError(
            f"cannot write to output folder {path}: {probe} is not writable ({e.strerror})"
        ) from None
    return path


def check_writable(folder: str | Path, tag: str = "") -> Path:
    """Create `folder` and check a file can be written there; one-line error if not."""

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".write_test{tag}.", suffix=TMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(name)  # a fresh name of our own: a user's file is never touched
    except OSError as e:
        raise EmosaeError(f"cannot write to output folder {folder}: {e.strerror}") from None
    return folder
