"""Old names that still read: emosae 0.1 said "emotion" where it now says "concept"
(an emotion is one kind of concept). Attributes and file keys under their old names
keep working through these helpers, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any


def deprecated(old: str, new: str) -> None:
    """Warn once per call site that `old` is now `new`."""
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def key(record: Mapping[str, Any], new: str, old: str, default: Any = KeyError) -> Any:
    """`record[new]`, or `record[old]` as written by emosae 0.1 (no warning: old files
    are not the reader's fault); `default` when neither is present (KeyError if none)."""
    if new in record:
        return record[new]
    if old in record:
        return record[old]
    if default is KeyError:
        raise KeyError(new)
    return default
