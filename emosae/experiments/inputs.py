"""The experiments' inputs, bundled with emosae: scenarios that imply an emotion
without naming it, dose-like intensity templates, activities with the paper's Elo,
and choices under pressure (an honest answer against a shortcut)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emosae.core.errors import EmosaeError
from emosae.data.io import RESOURCES, read_json, read_jsonl

STEERED_EMOTIONS = ("happy", "sad", "calm", "afraid")
"""The emotions the run calibrates and the generation experiment steers by default,
and whose curves the intensity experiment always keeps (the paper's examples)."""


@dataclass(frozen=True)
class Scenario:
    concept: str
    """The emotion (a concept of the bundled set) the situation implies."""
    prompt: str
    source: str


def load_scenarios(root: Path = RESOURCES) -> list[Scenario]:
    """User messages whose situation implies an emotion without naming it."""
    path = root / "scenarios.jsonl"
    return [
        Scenario(r["emotion"], r["prompt"], r.get("source", "emosae"))
        for _, r in read_jsonl(path, ("emotion", "prompt"))
    ]


@dataclass(frozen=True)
class IntensityTemplate:
    id: str
    template: str
    values: tuple[float, ...]
    unit: str
    expect: dict[str, str]

    def render(self, x: float) -> str:
        return self.template.replace("{X}", f"{x:g}")


def load_intensity(root: Path = RESOURCES) -> list[IntensityTemplate]:
    path = root / "intensity.json"
    out = []
    for i, t in enumerate(read_json(path)):
        if t["template"].count("{X}") != 1:
            raise EmosaeError(f"{path}: template #{i} ({t.get('id')}) needs exactly one {{X}} slot")
        out.append(
            IntensityTemplate(
                t["id"],
                t["template"],
                tuple(t["values"]),
                t.get("unit", ""),
                dict(t.get("expect", {})),
            )
        )
    return out


@dataclass(frozen=True)
class Activity:
    category: str
    activity: str
    elo_paper: float
    """Sonnet 4.5's Elo for the activity (paper Table 9)."""
    blissful_paper: float
    hostile_paper: float


def load_activities(root: Path = RESOURCES) -> list[Activity]:
    return [Activity(**a) for a in read_json(root / "activities.json")]


@dataclass(frozen=True)
class PressureItem:
    id: str
    prompt: str
    honest: str
    shortcut: str


def load_pressure(root: Path = RESOURCES) -> list[PressureItem]:
    path = root / "pressure.jsonl"
    return [
        PressureItem(r["id"], r["prompt"], r["honest"], r["shortcut"])
        for _, r in read_jsonl(path, ("id", "prompt", "honest", "shortcut"))
    ]
