"""Side files: hidden files emosae keeps beside an output (a writer's lock, the outputs
ledger, a partial read and its progress). Each is created exclusively, never through a
link, carries emosae's marker on its first line, and is rewritten or removed only when the
marker is there; anything else at its path is one line naming it (`core.folders` uses them).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emosae.core import io
from emosae.core.errors import EmosaeError

SIDE_KEY = "emosae"
"""The marker of a side file: this key of its first line's JSON object names its kind."""
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True)
class SideFile:
    """A hidden file emosae keeps beside an output (see the module docstring): its first
    line is a JSON object carrying `{"emosae": kind}`, optionally followed by a body (a
    partial read's rows). `legacy` recognises the shape an older emosae wrote unmarked."""

    path: Path
    kind: str
    legacy: Callable[[Any], bool] | None = None

    def _foreign(self, why: str) -> EmosaeError:
        return EmosaeError(
            f"{self.path} is not emosae's {self.kind} file ({why}); emosae never follows, "
            "replaces or deletes what it did not write: move it away or choose another output"
        )

    def _open(self, flags: int) -> int:
        """A descriptor of the regular file at the path, never through a link
        (FileNotFoundError when nothing is there)."""
        mode = os.lstat(self.path).st_mode
        if stat.S_ISLNK(mode):
            raise self._foreign("a symbolic link")
        if not stat.S_ISREG(mode):
            raise self._foreign("not a regular file")
        try:
            return os.open(self.path, flags | _NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self._foreign("a symbolic link") from None
            raise

    def header(self) -> dict[str, Any] | None:
        """The marker line's JSON object; None when nothing is at the path. Anything but
        emosae's own side file of this kind there is a one-line error naming it."""
        try:
            fd = self._open(os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):  # nothing there (or no folder)
            return None
        with os.fdopen(fd, "rb") as f:
            line = f.readline(1 << 24)
        try:
            head = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._foreign("no emosae marker" if line else "empty") from None
        if isinstance(head, dict) and head.get(SIDE_KEY) == self.kind:
            return head
        if self.legacy is not None and self.legacy(head):
            return head
        raise self._foreign("no emosae marker")

    def body(self) -> bytes:
        """Everything after the marker line (after checking the marker)."""
        self.header()
        with os.fdopen(self._open(os.O_RDONLY), "rb") as f:
            f.readline(1 << 24)
            return f.read()

    def _content(self, data: dict[str, Any]) -> bytes:
        return (json.dumps({SIDE_KEY: self.kind, **data}, default=float) + "\n").encode()

    def create(self, data: dict[str, Any]) -> None:
        """Create the file with `data` as its marker line; FileExistsError if anything
        (a link too) is at the path."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(self._content(data))

    def replace(self, data: dict[str, Any]) -> None:
        """Write the file anew as `data` (one line): only over emosae's own file of this
        kind or nothing; written to a fresh temp name and renamed (`io.write_atomic`),
        which replaces a link planted meanwhile, never its target."""
        self.header()
        try:
            io.write_atomic(self.path, lambda t: t.write_bytes(self._content(data)))
        except OSError as e:
            raise EmosaeError(f"cannot write {self.path}: {e.strerror or e}") from None

    def append(self, data: bytes) -> int:
        """Append to the body, durably; the file's new length."""
        self.header()
        fd = self._open(os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def truncate(self, size: int) -> None:
        self.header()
        fd = self._open(os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def size(self) -> int:
        return os.lstat(self.path).st_size

    def remove(self) -> None:
        """Delete the file if it is emosae's own; nothing there is fine."""
        if self.header() is not None:
            self.path.unlink(missing_ok=True)
