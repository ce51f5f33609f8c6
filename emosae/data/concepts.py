"""Concept sets: labelled stories for any concepts, the unit every concept-level stage
(probes, feature labels, comparison, readout) works on.

A concept set is a folder:

  concepts.jsonl  {"name", "group", "forbidden": [...]} per line; optional "valence",
                  "arousal" (human norms, 1-9, for the geometry analysis)
  stories.jsonl   {"concept", "topic", "text"} per line; optional "person"
  neutral.jsonl   optional: {"text"} or {"user", "assistant"} per line, for the
                  neutral-PC denoising (default: the bundled neutral dialogues)
  split.json      optional: {"heldout_topics": [...]} (default: a quarter of the
                  topics, chosen by a hash of their names, so the same for everyone)

The bundled 48 emotions are one concept set (`bundled()`), built from the package
data through the same checks. A set is checked whole on load: the forbidden words of
a concept are absent from its stories, every concept has stories on at least
`MIN_TOPICS` topics with at least one held-out and two training topics, and every
story names a known concept, once (no story twice). Errors are one line naming the file
and line.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.data.checks import forbidden_hits
from emosae.data.io import read_json, read_jsonl

MIN_TOPICS = 4
"""Distinct topics a concept's stories must cover (>= 1 held-out, >= 2 for training)."""
BUNDLED_NAME = "emotions"
FILES = ("concepts.jsonl", "stories.jsonl", "neutral.jsonl", "split.json")


@dataclass(frozen=True)
class Concept:
    name: str
    group: str
    """A coarser grouping (the bundled emotions: the paper's ten clusters)."""
    forbidden: tuple[str, ...]
    valence: float | None = None
    arousal: float | None = None


@dataclass(frozen=True)
class ConceptSet:
    """Concepts, their stories, the held-out topics and the neutral texts."""

    name: str
    concepts: tuple[Concept, ...]
    stories: tuple[data.Story, ...]
    """Each story's `emotion` field holds its concept's name."""
    heldout_topics: tuple[str, ...]
    neutral: tuple[str | tuple[str, str], ...] | None = None
    """Plain texts or (user, assistant) pairs; None: the bundled neutral dialogues."""
    fingerprint: str = ""
    """sha256 of the set's content (stage keys and records use it)."""
    group_order: tuple[str, ...] = ()
    """Order of the groups (default: first appearance)."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    @property
    def groups(self) -> list[str]:
        """The groups, in `group_order` (bundled: the paper's clusters, positive to
        negative valence), else in order of first appearance."""
        return list(self.group_order or dict.fromkeys(c.group for c in self.concepts))

    @property
    def bundled(self) -> bool:
        return self.name == BUNDLED_NAME

    def is_heldout(self, story: data.Story) -> bool:
        return story.topic in self.heldout_topics

    def norms(self) -> tuple[list[float], list[float]]:
        """Valence and arousal per concept (nan where unknown)."""
        nan = float("nan")
        return (
            [c.valence if c.valence is not None else nan for c in self.concepts],
            [c.arousal if c.arousal is not None else nan for c in self.concepts],
        )

    def neutral_records(self, split: data.Split = "train") -> list[str | tuple[str, str]]:
        """The neutral texts (the bundled dialogues of `split` when the set has none)."""
        if self.neutral is not None:
            return list(self.neutral)
        return [(d.user, d.assistant) for d in data.load_dialogues(split)]


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON-object records of a jsonl file (the keys are checked by the callers)."""
    return list(read_jsonl(path, ()))


def _text(path: Path, ln: int, rec: dict[str, Any], key: str, optional: bool = False) -> Any:
    if key not in rec:
        if optional:
            return None
        raise EmosaeError(f"{path}:{ln}: record lacks {key!r}")
    v = rec[key]
    if not isinstance(v, str) or not v.strip():
        raise EmosaeError(f"{path}:{ln}: {key} must be non-empty text, not {v!r}")
    return v


def _norm(path: Path, ln: int, rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise EmosaeError(f"{path}:{ln}: {key} must be a finite number, not {v!r}")
    return float(v)


def _read_concepts(path: Path) -> tuple[list[Concept], dict[str, int]]:
    concepts, line_of = [], {}
    for ln, r in _lines(path):
        name, group = _text(path, ln, r, "name"), _text(path, ln, r, "group")
        forb = r.get("forbidden", [])
        if not isinstance(forb, list) or not all(isinstance(w, str) for w in forb):
            raise EmosaeError(f"{path}:{ln}: forbidden must be a list of words")
        if name in line_of:
            raise EmosaeError(
                f"{path}:{ln}: concept {name!r} already defined on line {line_of[name]}"
            )
        line_of[name] = ln
        val, aro = _norm(path, ln, r, "valence"), _norm(path, ln, r, "arousal")
        concepts.append(Concept(name, group, tuple(forb), val, aro))
    if len(concepts) < 2:
        raise EmosaeError(f"{path}: a concept set needs at least 2 concepts, found {len(concepts)}")
    return concepts, line_of


def _read_stories(path: Path, concepts: dict[str, Concept]) -> list[data.Story]:
    stories, seen, first = [], defaultdict(int), {}
    for ln, r in _lines(path):
        c, topic, text = (_text(path, ln, r, k) for k in ("concept", "topic", "text"))
        if c not in concepts:
            raise EmosaeError(f"{path}:{ln}: unknown concept {c!r} (not in concepts.jsonl)")
        # a story counted twice inflates the held-out n and its binomial bound
        key = (c, " ".join(text.split()))
        if key in first:
            raise EmosaeError(
                f"{path}:{ln}: duplicate story of {c!r} (the same text as line {first[key]})"
            )
        first[key] = ln
        hits = forbidden_hits(text, (*concepts[c].forbidden, c))
        if hits:
            raise EmosaeError(
                f"{path}:{ln}: story of {c!r} contains forbidden word(s) {', '.join(hits)}"
            )
        person = _text(path, ln, r, "person", optional=True) or "third"
        seen[(c, topic)] += 1
        n = seen[(c, topic)]
        sid = f"{c}/{topic}" if n == 1 else f"{c}/{topic}#{n}"
        stories.append(data.Story(sid, c, topic, person, text))
    return stories


def _read_neutral(path: Path) -> tuple[str | tuple[str, str], ...] | None:
    if not path.exists():
        return None
    out: list[str | tuple[str, str]] = []
    for ln, r in _lines(path):
        if "text" in r:
            out.append(_text(path, ln, r, "text"))
        elif "user" in r and "assistant" in r:
            out.append((_text(path, ln, r, "user"), _text(path, ln, r, "assistant")))
        else:
            raise EmosaeError(f'{path}:{ln}: expected {{"text"}} or {{"user", "assistant"}}')
    if not out:
        raise EmosaeError(f"{path}: no neutral texts (delete the file to use the bundled ones)")
    return tuple(out)


def default_heldout(topics: list[str]) -> tuple[str, ...]:
    """A quarter of the topics (at least one), chosen by a hash of their names."""
    ranked = sorted(set(topics), key=lambda t: hashlib.sha256(t.encode()).hexdigest())
    return tuple(sorted(ranked[: max(1, round(len(ranked) / 4))]))


def _read_split(path: Path, topics: set[str]) -> tuple[str, ...] | None:
    if not path.exists():
        return None
    d = read_json(path)
    held = d.get("heldout_topics") if isinstance(d, dict) else None
    if not isinstance(held, list) or not held or not all(isinstance(t, str) for t in held):
        raise EmosaeError(f'{path}:1: expected {{"heldout_topics": ["topic", ...]}}')
    unknown = sorted(set(held) - topics)
    if unknown:
        raise EmosaeError(f"{path}:1: held-out topic(s) with no stories: {', '.join(unknown)}")
    return tuple(sorted(set(held)))


def check_coverage(cs: ConceptSet, where: Path, line_of: dict[str, int]) -> None:
    """Every concept: stories on >= MIN_TOPICS topics, >= 1 held-out and >= 2 training."""
    topics: dict[str, set[str]] = defaultdict(set)
    for s in cs.stories:
        topics[s.concept].add(s.topic)
    held = set(cs.heldout_topics)
    for c in cs.concepts:
        t = topics[c.name]
        n_held, n_train = len(t & held), len(t - held)
        if len(t) < MIN_TOPICS or n_held < 1 or n_train < 2:
            raise EmosaeError(
                f"{where}:{line_of.get(c.name, 1)}: concept {c.name!r} has stories on {len(t)} "
                f"topic(s) ({n_train} training, {n_held} held-out); needs >= {MIN_TOPICS}, "
                "with >= 2 training and >= 1 held-out"
            )


def _fingerprint(root: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        p = root / name
        if p.exists():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def load_concept_set(root: str | Path | None) -> ConceptSet:
    """The concept set in folder `root` (None: the bundled emotions), checked whole."""
    if root is None:
        return bundled()
    root = Path(root)
    if not root.is_dir():
        raise EmosaeError(f"{root}: no such concept-set folder")
    cpath, spath = root / "concepts.jsonl", root / "stories.jsonl"
    for p in (cpath, spath):
        if not p.is_file():
            raise EmosaeError(
                f"{p}: missing (a concept set needs concepts.jsonl and stories.jsonl)"
            )
    concepts, line_of = _read_concepts(cpath)
    stories = _read_stories(spath, {c.name: c for c in concepts})
    topics = [s.topic for s in stories]
    held = _read_split(root / "split.json", set(topics)) or default_heldout(topics)
    cs = ConceptSet(
        root.resolve().name,
        tuple(concepts),
        tuple(stories),
        held,
        _read_neutral(root / "neutral.jsonl"),
        _fingerprint(root),
    )
    check_coverage(cs, cpath, line_of)
    return cs


@cache
def bundled() -> ConceptSet:
    """The 48 bundled emotions as a concept set (groups: the paper's clusters; norms:
    Warriner valence/arousal)."""
    norms = data.emotion_norms()
    concepts = tuple(
        Concept(
            e.name,
            e.cluster,
            e.forbidden,
            norms[e.name].valence if norms[e.name] else None,
            norms[e.name].arousal if norms[e.name] else None,
        )
        for e in data.load_emotions()
    )
    h = hashlib.sha256()
    for p in data.emotion_data_files():
        h.update(p.read_bytes())
    return ConceptSet(
        BUNDLED_NAME,
        concepts,
        tuple(data.load_stories("all")),
        data.load_topics().heldout,
        None,
        h.hexdigest(),
        tuple(data.clusters()),
    )
