"""Reading calibration files (`calibrate/calibration.json`, written by
`emosae.experiments.calibration.save_calibrations`): a folder's own, and the user's own
calibration of a shipped checkpoint's vectors under `$EMOSAE_HOME/calibrations/`.

A calibration file is input, checked before any strength or hook in it is used: a JSON
object whose "probe" and "sae" sections map each concept to an entry with a source of
that kind, a well-formed hook whose layer agrees with the entry's "layer", and strengths
(the recommended one and every swept one) within the command line's bound
(`check_strength`, |s| <= 4). `check_entries` then holds the entries of one kind against
the vectors loaded (a known concept, the model named, where the file names one, and a
hook those vectors can steer at). Anything else is one line naming the file and the
entry: a vector is never moved, nor its strength dropped, silently.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout, shipped_name, user_calibration
from emosae.lm.hooks import block_layer
from emosae.steering.vector import SteeringVector, check_strength

KINDS = ("probe", "sae")
"""The sections of a calibration file, one per kind of vector."""


def calibrations(layout: RunLayout) -> dict[str, Any]:
    """The checked calibration file of a run or checkpoint ({} when none was made)."""
    f = layout.calibrate
    if not f.calibration.exists():
        return {}
    folders.verify(f.dir, [f.calibration.name])
    return check_calibration(f.calibration, io.read_json(f.calibration))


def user_calibrations(layout: RunLayout) -> tuple[Path, dict[str, Any]]:
    """For a shipped checkpoint, the user's own calibration of its vectors (written by
    `emosae steer --calibrate --save`, since the checkpoint stays read-only) and its
    file; ({} and no file) for any other folder or when there is none."""
    name = shipped_name(layout.root)
    if name is None:
        return Path(), {}
    mine = user_calibration(name)
    return mine.calibrate.calibration, calibrations(mine)


def calibration_files(layout: RunLayout) -> list[tuple[Path, dict[str, Any]]]:
    """(file, record) of every calibration of `layout`'s vectors, the one that wins first:
    the user's own (of a shipped checkpoint), then the folder's."""
    return [user_calibrations(layout), (layout.calibrate.calibration, calibrations(layout))]


def check_calibration(path: Path, record: Any) -> dict[str, Any]:
    """`record` (read from `path`) if it is a calibration file (module docstring), else a
    one-line error naming the file and the entry."""
    if not isinstance(record, dict):
        raise EmosaeError(
            f"{path} is not a calibration: a JSON object with 'probe' and 'sae' sections, "
            f"not {_json_type(record)}"
        )
    for kind in KINDS:
        section = record.get(kind, {})
        if not isinstance(section, dict):
            raise EmosaeError(
                f"{path}: '{kind}' must be an object of concept: calibration, "
                f"not {_json_type(section)}"
            )
        for concept, entry in section.items():
            problem = _entry_problem(kind, concept, entry)
            if problem:
                raise EmosaeError(f"{path}: {kind} entry {concept!r:.60}: {problem}")
    return record


def _entry_problem(kind: str, concept: str, c: Any) -> str | None:
    """What is wrong with one entry (None if nothing)."""
    if not isinstance(c, dict):
        return f"must be an object, not {_json_type(c)}"
    if c.get("concept", concept) != concept:
        return f"its concept field is {c['concept']!r:.60}, not the entry's name"
    source, hook = c.get("source"), c.get("hook")
    if not isinstance(source, str) or not source.startswith(f"{kind}:"):
        return f"source must be a '{kind}:...' vector name, not {source!r:.60}"
    if not isinstance(hook, str):
        return f"hook must be a hook name, not {hook!r:.60}"
    try:
        layer = block_layer(hook)
        if c.get("layer") is not None and c.get("layer") != layer:
            return f"layer {c['layer']!r:.20} is not the layer of its hook {hook!r}"
        if c.get("recommended") is not None:
            check_strength(c["recommended"], "recommended strength")
        strengths = c.get("strengths")
        if not isinstance(strengths, list) or not strengths:
            return "strengths must be a non-empty list of the swept strengths"
        for s in strengths:
            check_strength(s, "swept strength")
        if not _numbers(c.get("ppl_ratio"), len(strengths)):
            return "ppl_ratio must be a list of numbers, one per swept strength"
        if c.get("kl") not in (None, []) and not _numbers(c["kl"], len(strengths)):
            return "kl must be a list of numbers, one per swept strength"
        budget: Any = c.get("budget")
        kl_budget: Any = c.get("kl_budget")
        if not (_number(budget) and budget > 1):
            return f"budget must be a number > 1, not {budget!r:.20}"
        if kl_budget is not None and not (_number(kl_budget) and kl_budget > 0):
            return f"kl_budget must be null or a number > 0, not {kl_budget!r:.20}"
    except EmosaeError as e:
        return str(e)
    return None


def check_entries(
    files: list[tuple[Path, dict[str, Any]]],
    kind: str,
    vecs: Mapping[str, SteeringVector],
    hooks: Collection[str],
) -> None:
    """Hold each `kind` entry of the calibration `files` against the vectors loaded:
    a concept among `vecs`, the model they were made for (where the file names one),
    and a hook among `hooks` (where these vectors can steer); else one line naming the
    file and the entry."""
    models = {v.model for v in vecs.values()}
    for path, record in files:
        if record.get("model") is not None and record["model"] not in models:
            raise EmosaeError(
                f"{path} calibrates vectors of model {record['model']!r:.60}, not of "
                f"{', '.join(sorted(map(str, models)))}"
            )
        for concept, c in record.get(kind, {}).items():
            where = f"{path}: {kind} entry {concept!r:.60}"
            if concept not in vecs:
                raise EmosaeError(f"{where}: no such concept in these directions")
            if c["hook"] not in hooks:
                raise EmosaeError(
                    f"{where}: hook {c['hook']!r:.60} is not one these vectors steer at "
                    f"({', '.join(sorted(hooks, key=_layer_key))})"
                )


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _numbers(xs: Any, n: int) -> bool:
    return isinstance(xs, list) and len(xs) == n and all(_number(x) for x in xs)


def _layer_key(hook: str) -> tuple[int, str]:
    return (block_layer(hook) or 0, hook)


def _json_type(x: Any) -> str:
    """The JSON name of a value's type ("an array", "a number", ...)."""
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(x), "a number" if isinstance(x, int | float) else "an object")
