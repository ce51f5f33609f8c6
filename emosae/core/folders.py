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

Side files (`SideFile`): the lock, a dataset read's `.OUT.partial.jsonl` and
`.OUT.progress.json`, and the `.emosae-outputs.json` ledger are hidden files beside a
user's outputs, so they follow one rule: each is created exclusively (`O_EXCL`,
`O_NOFOLLOW`: never over something already there, never through a link), begins with
emosae's marker (a JSON object whose `"emosae"` key names its kind), and is read,
rewritten or removed only when that marker is in it. Anything else at its path (a user's
file, a link, a folder) is one line naming it, exit 2.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emosae import __version__
from emosae.core import io
from emosae.core.errors import EmosaeError
from emosae.core.layout import (
    LEGACY_FILES,
    LOCK_NAME,
    MARKER_NAME,
    OUTPUTS_NAME,
    files_in,
    in_package,
)
from emosae.core.log import logger
from emosae.core.sidefiles import SIDE_KEY, SideFile

_HELD: set[Path] = set()


def _format(version: str) -> tuple[int, int]:
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (0, 0)


def read_marker(folder: Path) -> dict[str, Any] | None:
    """A folder's marker; a folder written by a newer emosae (a file format this one
    cannot read) is refused with the versions named."""
    m = folder / MARKER_NAME
    if not m.exists():
        return None
    try:
        mark = json.loads(m.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EmosaeError(f"{m} is corrupt (not JSON); remove the folder or fix the file") from None
    if not isinstance(mark, dict):
        raise EmosaeError(f"{m} is corrupt (not a JSON object); remove the folder or fix the file")
    wrote = str(mark.get("emosae", "0.1"))
    if _format(wrote) > _format(__version__):
        raise EmosaeError(
            f"{folder} was written by emosae {wrote}; this emosae {__version__} reads folders "
            f"up to format {'.'.join(map(str, _format(__version__)))}: upgrade emosae"
        )
    return mark


def check_claimable(folder: str | Path, kind: str) -> Path:
    """Refuse (one line) unless `folder` is absent, empty, or an emosae `kind` folder
    that no other process is writing, outside the package. Writes nothing: call before
    any work (before the model loads), then `lock` and `claim` when writing starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EmosaeError(f"output {folder} is a file, not a folder; choose another --out")
    if kind != "checkpoint":  # `emosae run --ship` alone writes shipped checkpoints
        check_not_shipped(folder)
    check_unlocked(folder)
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
    io.write_json(folder / MARKER_NAME, {"kind": kind, "emosae": __version__})
    return folder


def seal(folder: str | Path, kind: str) -> Path:
    """Record the sha256 of every file in `folder` (recursively) in its marker."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): io.sha256_file(p)
        for p in files_in(folder)
        if p.name != MARKER_NAME and not p.name.endswith(LOCK_NAME)
    }
    return io.write_json(
        folder / MARKER_NAME, {"kind": kind, "emosae": __version__, "files": files}
    )


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


def _legacy_lock(head: Any) -> bool:
    """A lock written by emosae 0.2 before side files carried a marker."""
    return (
        isinstance(head, dict)
        and set(head) == {"pid", "host"}
        and isinstance(head["pid"], int)
        and isinstance(head["host"], str)
    )


def lock_file(folder: Path) -> SideFile:
    """The side file that holds `folder`'s writer lock."""
    return SideFile(lock_path(folder), "lock", _legacy_lock)


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
    side = lock_file(folder)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            side.create(me)
        except FileExistsError:  # a link or anything else at the path too
            _take_over_if_stale(side, folder)
            continue
        except OSError as e:  # a read-only or virtual place (/proc): one line
            raise EmosaeError(f"cannot write {folder}: {e.strerror or e}") from None
        break
    else:
        raise EmosaeError(f"could not take the lock {side.path}")
    _HELD.add(folder)
    try:
        yield folder
    finally:
        _HELD.discard(folder)
        _release(side, me)


def _release(side: SideFile, me: dict[str, Any]) -> None:
    """Remove our own lock; one replaced meanwhile is left alone, with a warning."""
    try:
        holder = side.header()
    except EmosaeError as e:
        logger.warning("%s", e)
        return
    if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
        side.path.unlink(missing_ok=True)


def _stale(holder: dict[str, Any]) -> bool:
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int):
        return True
    return host == socket.gethostname() and not _alive(pid)


def _busy(folder: Path, path: Path, holder: dict[str, Any]) -> EmosaeError:
    return EmosaeError(
        f"{folder} is being written by pid {holder.get('pid')} on {holder.get('host')}; "
        f"wait for it to finish (or remove {path} if that process is gone)"
    )


def check_unlocked(folder: str | Path) -> None:
    """Refuse (one line) a folder another live process is writing: the check `lock`
    makes, done before the model loads. Under torchrun only rank 0 checks: it is the
    rank that takes the lock, and the others may arrive after it did."""
    folder = Path(folder).resolve()
    if folder in _HELD or os.environ.get("RANK", "0") != "0":
        return
    side = lock_file(folder)
    holder = side.header()  # a user's file or a link there: one line
    if holder is not None and not _stale(holder):
        raise _busy(folder, side.path, holder)


def _take_over_if_stale(side: SideFile, folder: Path) -> None:
    holder = side.header()
    if holder is None:  # released meanwhile
        return
    if not _stale(holder):
        raise _busy(folder, side.path, holder)
    logger.warning("taking over the stale lock %s of dead process %s", side.path, holder.get("pid"))
    side.remove()


# Single-file outputs (`--html`, `--out` of export and read, pages): one rule for all.
# A path that exists is replaced only when emosae wrote it and nobody changed it since
# (its sha256 is in the folder's OUTPUTS_NAME ledger), or with force=True (`--force`).


def _legacy_ledger(head: Any) -> bool:
    """A ledger written by emosae 0.2 before side files carried a marker: file names
    and their sha256."""
    return isinstance(head, dict) and all(
        isinstance(v, str) and len(v) == 64 and set(v) <= set("0123456789abcdef")
        for v in head.values()
    )


def ledger_file(path: Path) -> SideFile:
    """The ledger side file beside the output file `path`."""
    return SideFile(path.parent / OUTPUTS_NAME, "outputs", _legacy_ledger)


def _ledger(path: Path) -> dict[str, str]:
    head = ledger_file(path).header()  # a user's file or a link there: one line
    if head is None:
        return {}
    files = head.get("files", {}) if head.get(SIDE_KEY) == "outputs" else head
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def _ours(path: Path, led: dict[str, str]) -> bool:
    sha = led.get(path.name)
    return isinstance(sha, str) and path.is_file() and io.sha256_file(path) == sha


def check_not_shipped(path: str | Path) -> Path:
    """Refuse (one line) a write into the installed package or a shipped checkpoint:
    they are read-only to emosae (only `emosae run --ship` writes checkpoints)."""
    path = Path(path)
    if in_package(path):
        raise EmosaeError(
            f"refusing to write {path}: it is inside emosae's installed package or a shipped "
            "checkpoint, which emosae never changes; choose a path of your own"
        )
    return path


def check_output_file(path: str | Path, force: bool = False) -> Path:
    """Refuse (one line) an output file path that emosae may not write: a folder, a file
    emosae did not write (or that was changed since) unless `force`, a place inside the
    package, or one that cannot be written (its folder may be missing: it is made).
    Leaves nothing behind: call before any work."""
    path = Path(path)
    if path.is_dir():
        raise EmosaeError(f"output {path} is a folder; name a file")
    if path.name == OUTPUTS_NAME:
        raise EmosaeError(f"output {path}: {OUTPUTS_NAME} is emosae's ledger; name another file")
    led = _ledger(path)  # checked first: a ledger that is not emosae's is refused
    if path.exists() and not force and not _ours(path, led):
        raise EmosaeError(
            f"refusing to overwrite {path}: emosae did not write it (or it changed since); "
            "choose another path or pass --force"
        )
    check_not_shipped(path)
    io.check_creatable(path.absolute().parent)
    return path


def record_output(path: str | Path) -> Path:
    """Note in the folder's ledger that emosae wrote `path` (as it is now)."""
    path = Path(path)
    led = _ledger(path)
    led[path.name] = io.sha256_file(path)
    ledger_file(path).replace({"files": dict(sorted(led.items()))})
    return path


def write_output(path: str | Path, write: Callable[[Path], Any], force: bool = False) -> Path:
    """`check_output_file`, then `write(tmp)` atomically onto `path`, then `record_output`.
    An OS error (full disk, a folder that vanished) is one line; nothing half-written."""
    path = check_output_file(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_atomic(path, write)
    except OSError as e:
        raise EmosaeError(f"cannot write {path}: {e.strerror or e}") from None
    return record_output(path)


def write_output_text(path: str | Path, text: str, force: bool = False) -> Path:
    """A text output file under `write_output`'s rule (UTF-8)."""
    return write_output(path, lambda t: t.write_text(text, encoding="utf-8"), force)
