"""Output folders emosae owns: it never deletes or overwrites what it did not write.

Every folder emosae writes carries a marker, `.emosae.json`, naming its kind (`run`,
`cache`, `sae`, `probes`, ...) and, once its writer finishes, the sha256 of every file in
it (its *seal*). An output folder must be new, empty, or an emosae folder of the same
kind; anything else is refused with one line. Readers verify a folder's seal before they
trust its files, so a corrupted or edited artifact is named instead of silently used.

One writer per folder: `.<folder>.emosae.lock` beside it holds the writer's pid and host
(beside, not inside, so that a folder replaced whole by a rename keeps its lock). A second process
is refused with the holder's name; a lock left by a dead process on this host is taken
over with a message. Locks are re-entrant within one process (a run folder's stages lock
their own subfolders).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emosae.core import io
from emosae.core.errors import EmosaeError
from emosae.core.layout import LEGACY_FILES, LOCK_NAME, MARKER_NAME, files_in
from emosae.core.log import logger

_HELD: set[Path] = set()


def read_marker(folder: Path) -> dict[str, Any] | None:
    m = folder / MARKER_NAME
    if not m.exists():
        return None
    try:
        return json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EmosaeError(f"{m} is corrupt (not JSON); remove the folder or fix the file") from None


def check_claimable(folder: str | Path, kind: str) -> Path:
    """Refuse (one line) unless `folder` is absent, empty, or an emosae `kind` folder.
    Writes nothing: call before any work, then `claim` when writing starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EmosaeError(f"output {folder} is a file, not a folder; choose another --out")
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder
    mark = read_marker(folder)
    if mark is None and kind in LEGACY_FILES and (folder / LEGACY_FILES[kind]).exists():
        return folder  # written by emosae 0.1: ours
    if mark is None:
        raise EmosaeError(
            f"refusing to write into {folder}: it holds files emosae did not write "
            f"(no {MARKER_NAME}); choose a new or empty folder"
        )
    if mark.get("kind") != kind:
        raise EmosaeError(
            f"refusing to write into {folder}: it is an emosae {mark.get('kind')} folder, "
            f"not a {kind} folder"
        )
    return folder


def claim(folder: str | Path, kind: str) -> Path:
    """Make `folder` an emosae `kind` output folder (after `check_claimable`'s rules).
    Its seal is dropped: its writer is about to change files, and seals again when done."""
    folder = check_claimable(folder, kind)
    io.check_writable(folder)
    io.write_json(folder / MARKER_NAME, {"kind": kind})
    return folder


def seal(folder: str | Path, kind: str) -> Path:
    """Record the sha256 of every file in `folder` (recursively) in its marker."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): io.sha256_file(p)
        for p in files_in(folder)
        if p.name != MARKER_NAME and not p.name.endswith(LOCK_NAME)
    }
    return io.write_json(folder / MARKER_NAME, {"kind": kind, "files": files})


def verify(folder: str | Path, names: list[str] | None = None) -> None:
    """Check the sealed files of `folder` (or only `names` of them) against their sha256;
    a one-line error names the first that is missing or differs. Unsealed folders (made
    by emosae 0.1, or still being written) pass."""
    folder = Path(folder)
    mark = read_marker(folder)
    if not mark or "files" not in mark:
        return
    for rel in names if names is not None else mark["files"]:
        sha = mark["files"].get(rel)
        if sha is None:
            continue
        p = folder / rel
        if not p.exists():
            raise EmosaeError(f"{p} is missing (listed in {folder / MARKER_NAME})")
        if io.sha256_file(p) != sha:
            raise EmosaeError(
                f"{p} does not match its sha256 in {folder / MARKER_NAME} (corrupted or edited)"
            )


def lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}{LOCK_NAME}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def lock(folder: str | Path) -> Iterator[Path]:
    """Hold `folder`'s writer lock for the block (re-entrant within this process)."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        yield folder
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(folder)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            _take_over_if_stale(path, folder, me)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise EmosaeError(f"could not take the lock {path}")
    _HELD.add(folder)
    try:
        yield folder
    finally:
        _HELD.discard(folder)
        path.unlink(missing_ok=True)


def _take_over_if_stale(path: Path, folder: Path, me: dict[str, Any]) -> None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        holder = {}
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and host == me["host"] and not _alive(pid):
        logger.warning("taking over the stale lock %s of dead process %s", path, pid)
        path.unlink(missing_ok=True)
        return
    if not holder:
        # half-written by a writer that was killed before it wrote its name
        logger.warning("taking over the unreadable lock %s", path)
        path.unlink(missing_ok=True)
        return
    raise EmosaeError(
        f"{folder} is being written by pid {pid} on {host}; wait for it to finish "
        f"(or remove {path} if that process is gone)"
    )
