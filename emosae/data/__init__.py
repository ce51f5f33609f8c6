"""The bundled concept corpus and the data behind it, behind one typed API: the 48
emotions (a concept set, see `concepts`), hand-written stories that never name their
emotion, emotionally flat dialogues, neutral prompts, and the Warriner et al. (2013)
valence/arousal/dominance norms. File reading lives in `io`, SAE training text in
`corpus`; the experiments' inputs are `emosae.experiments.inputs`. Held-out topics
(`load_topics().heldout`) are never returned by a "train" split: no fitting step may
see them.

Malformed files raise `EmosaeError` naming the file and line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from emosae.core import compat
from emosae.core.errors import EmosaeError
from emosae.data.corpus import (
    BUNDLED_CORPUS,
    check_sources,
    corpus_path,
    emotion_data_files,
    iter_corpus,
)
from emosae.data.io import RESOURCES, read_json, read_jsonl

__all__ = [
    "BUNDLED_CORPUS",
    "Dialogue",
    "Emotion",
    "NORMS_CITATION",
    "Norm",
    "RESOURCES",
    "Split",
    "Story",
    "Topics",
    "check_sources",
    "clusters",
    "corpus_path",
    "emotion_data_files",
    "emotion_names",
    "emotion_norms",
    "iter_corpus",
    "load_dialogues",
    "load_emotions",
    "load_neutral_prompts",
    "load_norms",
    "load_stories",
    "load_topics",
    "read_json",
    "read_jsonl",
]

Split = Literal["train", "heldout", "all"]


@dataclass(frozen=True)
class Emotion:
    name: str
    """The emotion word, as in the paper's list."""
    cluster: str
    """One of the paper's ten clusters (Appendix Table 12)."""
    forbidden: tuple[str, ...]
    """Words its stories may not contain: the name, inflections, direct synonyms."""
    norm_lemma: str | None = None
    """Warriner lemma to use when the name itself has no norm ("loving" -> "love")."""


@dataclass(frozen=True)
class Story:
    id: str
    """`<concept>/<topic>`: unique, stable."""
    concept: str
    """The concept (for the bundled set, the emotion) the story conveys unnamed."""
    topic: str
    person: Literal["first", "third"]
    text: str

    @property
    def emotion(self) -> str:
        """Deprecated name of `concept`."""
        compat.deprecated("Story.emotion", "Story.concept")
        return self.concept


@dataclass(frozen=True)
class Dialogue:
    id: str
    topic: str
    user: str
    assistant: str


@dataclass(frozen=True)
class Topics:
    all: tuple[str, ...]
    heldout: tuple[str, ...]
    """The fixed held-out topics (a quarter): evaluation only."""

    @property
    def train(self) -> tuple[str, ...]:
        return tuple(t for t in self.all if t not in self.heldout)


@dataclass(frozen=True)
class Norm:
    """Warriner et al. (2013) mean ratings on 1-9 scales."""

    valence: float
    arousal: float
    dominance: float


@cache
def load_emotions(root: Path = RESOURCES) -> tuple[Emotion, ...]:
    """The emotion concepts, each with its cluster and forbidden words."""
    path = root / "emotions.json"
    d = read_json(path)
    clusters = set(d["clusters"])
    out = []
    for i, e in enumerate(d["emotions"]):
        if e.get("cluster") not in clusters:
            raise EmosaeError(
                f"{path}: emotion #{i} {e.get('name')!r}: unknown cluster {e.get('cluster')!r}"
            )
        out.append(Emotion(e["name"], e["cluster"], tuple(e["forbidden"]), e.get("norm_lemma")))
    return tuple(out)


def emotion_names(root: Path = RESOURCES) -> list[str]:
    return [e.name for e in load_emotions(root)]


def clusters(root: Path = RESOURCES) -> list[str]:
    """The paper's ten clusters, ordered from positive to negative valence."""
    return list(read_json(root / "emotions.json")["clusters"])


@cache
def load_topics(root: Path = RESOURCES) -> Topics:
    d = read_json(root / "topics.json")
    ids = tuple(t["id"] for t in d["topics"])
    return Topics(all=ids, heldout=tuple(d["heldout"]))


def _split_ok(topic: str, split: Split, topics: Topics) -> bool:
    if split == "all":
        return True
    if split not in ("train", "heldout"):
        raise EmosaeError(f"split must be 'train', 'heldout' or 'all', not {split!r}")
    return (topic in topics.heldout) == (split == "heldout")


@cache
def _all_stories(root: Path) -> tuple[Story, ...]:
    names = set(emotion_names(root))
    topics = load_topics(root)
    out = []
    for path in sorted((root / "stories").glob("*.jsonl")):
        for ln, r in read_jsonl(path, ("emotion", "topic", "person", "text")):
            if r["emotion"] not in names:
                raise EmosaeError(f"{path}:{ln}: unknown emotion {r['emotion']!r}")
            if r["topic"] not in topics.all:
                raise EmosaeError(f"{path}:{ln}: unknown topic {r['topic']!r}")
            out.append(
                Story(
                    f"{r['emotion']}/{r['topic']}", r["emotion"], r["topic"], r["person"], r["text"]
                )
            )
    return tuple(out)


def load_stories(split: Split = "all", root: Path = RESOURCES) -> list[Story]:
    """Stories, ordered by emotion file then line. `split` selects by topic."""
    topics = load_topics(root)
    return [s for s in _all_stories(root) if _split_ok(s.topic, split, topics)]


def load_dialogues(split: Split = "all", root: Path = RESOURCES) -> list[Dialogue]:
    """Emotionally flat User/Assistant exchanges (for the neutral principal components)."""
    topics = load_topics(root)
    out = []
    path = root / "dialogues.jsonl"
    for ln, r in read_jsonl(path, ("topic", "user", "assistant")):
        if r["topic"] not in topics.all:
            raise EmosaeError(f"{path}:{ln}: unknown topic {r['topic']!r}")
        if _split_ok(r["topic"], split, topics):
            out.append(Dialogue(f"dialogue/{ln}", r["topic"], r["user"], r["assistant"]))
    return out


def load_neutral_prompts(root: Path = RESOURCES) -> list[str]:
    return list(read_json(root / "neutral_prompts.json"))


# ------------------------------------------------------------------ human norms

NORMS_CITATION = (
    "Warriner, A.B., Kuperman, V., & Brysbaert, M. (2013). Norms of valence, arousal, and "
    "dominance for 13,915 English lemmas. Behavior Research Methods, 45, 1191-1207."
)


@cache
def load_norms(root: Path = RESOURCES) -> dict[str, Norm]:
    """Warriner et al. (2013) norms: lower-case lemma -> mean valence/arousal/dominance."""
    path = root / "warriner2013_vad.csv"
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for ln, row in enumerate(csv.DictReader(f), 2):
            try:
                out[row["word"].lower()] = Norm(
                    float(row["valence"]), float(row["arousal"]), float(row["dominance"])
                )
            except (KeyError, ValueError) as e:
                raise EmosaeError(f"{path}:{ln}: bad norm row ({e})") from None
    return out


def emotion_norms(root: Path = RESOURCES) -> dict[str, Norm | None]:
    """Norm for every emotion word: the word itself, else its `norm_lemma`, else None."""
    norms = load_norms(root)
    out: dict[str, Norm | None] = {}
    for e in load_emotions(root):
        out[e.name] = norms.get(e.name) or (norms.get(e.norm_lemma) if e.norm_lemma else None)
    return out
