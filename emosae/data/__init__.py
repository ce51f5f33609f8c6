"""The emotion corpus and evaluation data shipped with emosae, behind one typed API.

Everything here is package data under `emosae/data/resources/` (see README "Data"):
hand-written stories that never name their emotion, emotionally flat dialogues,
evaluation prompts, the Warriner et al. (2013) valence/arousal/dominance norms, and a
public-domain general-text corpus for SAE training. Held-out topics (`load_topics().heldout`)
are never returned by a "train" split: no fitting step may see them.

Malformed files raise `EmosaeError` naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emosae.core.errors import EmosaeError

Split = Literal["train", "heldout", "all"]
RESOURCES = Path(str(files("emosae.data").joinpath("resources")))


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
    """`<emotion>/<topic>`: unique, stable."""
    emotion: str
    topic: str
    person: Literal["first", "third"]
    text: str


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise EmosaeError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None


def _read_text(path: Path) -> str:
    """A UTF-8 text file (gzipped if its name ends in .gz); one-line errors."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EmosaeError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise EmosaeError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, EOFError) as e:
        raise EmosaeError(f"{path}: cannot read ({e})") from None


def _read_jsonl(path: Path, keys: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a jsonl file: each an object with `keys`, whose values are text.
    Errors name the file and line."""
    return _records(path, _read_text(path).splitlines(), keys)


def _records(
    path: Path, lines: Sequence[str], keys: Sequence[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EmosaeError(f"{path}:{ln}: malformed JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise EmosaeError(f"{path}:{ln}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in keys if k not in rec]
        if missing:
            raise EmosaeError(f"{path}:{ln}: record lacks keys {missing}")
        bad = [k for k in keys if not isinstance(rec[k], str)]
        if bad:
            raise EmosaeError(f"{path}:{ln}: {', '.join(bad)} must be text, not {rec[bad[0]]!r}")
        yield ln, rec


@cache
def load_emotions(root: Path = RESOURCES) -> tuple[Emotion, ...]:
    """The emotion concepts, each with its cluster and forbidden words."""
    path = root / "emotions.json"
    d = _read_json(path)
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
    return list(_read_json(root / "emotions.json")["clusters"])


@cache
def load_topics(root: Path = RESOURCES) -> Topics:
    d = _read_json(root / "topics.json")
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
        for ln, r in _read_jsonl(path, ("emotion", "topic", "person", "text")):
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
    for ln, r in _read_jsonl(path, ("topic", "user", "assistant")):
        if r["topic"] not in topics.all:
            raise EmosaeError(f"{path}:{ln}: unknown topic {r['topic']!r}")
        if _split_ok(r["topic"], split, topics):
            out.append(Dialogue(f"dialogue/{ln}", r["topic"], r["user"], r["assistant"]))
    return out


@dataclass(frozen=True)
class Scenario:
    emotion: str
    prompt: str
    source: str


def load_scenarios(root: Path = RESOURCES) -> list[Scenario]:
    """User messages whose situation implies an emotion without naming it."""
    path = root / "scenarios.jsonl"
    return [
        Scenario(r["emotion"], r["prompt"], r.get("source", "emosae"))
        for _, r in _read_jsonl(path, ("emotion", "prompt"))
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
    for i, t in enumerate(_read_json(path)):
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
    return [Activity(**a) for a in _read_json(root / "activities.json")]


def load_neutral_prompts(root: Path = RESOURCES) -> list[str]:
    return list(_read_json(root / "neutral_prompts.json"))


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
        for _, r in _read_jsonl(path, ("id", "prompt", "honest", "shortcut"))
    ]


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


_WORD = re.compile(r"[a-z]+")


def text_norms(text: str, norms: dict[str, Norm] | None = None) -> tuple[float, float, int]:
    """Mean Warriner valence and arousal of the words of `text` that have norms
    (a word is looked up as is, then with a plural/past/-ing ending undone)."""
    norms = norms if norms is not None else load_norms()
    vals, aros = [], []
    for w in _WORD.findall(text.lower()):
        n = norms.get(w)
        if n is None:
            for suf, rep in (
                ("s", ""),
                ("ies", "y"),
                ("es", ""),
                ("ed", ""),
                ("ed", "e"),
                ("ing", ""),
                ("ing", "e"),
            ):
                if w.endswith(suf) and (n := norms.get(w[: -len(suf)] + rep)) is not None:
                    break
        if n is not None:
            vals.append(n.valence)
            aros.append(n.arousal)
    if not vals:
        return float("nan"), float("nan"), 0
    return float(np.mean(vals)), float(np.mean(aros)), len(vals)


# ------------------------------------------------------------------ general text

BUNDLED_CORPUS = ("jane_austen", "moby_dick", "state_of_the_union")


def corpus_path(name: str) -> Path:
    """The file of a bundled general-text corpus."""
    return RESOURCES / "corpus" / f"{name}.txt.gz"


def emotion_data_files(root: Path = RESOURCES) -> list[Path]:
    """The files behind the stories and dialogues (for content fingerprints)."""
    return [
        root / "dialogues.jsonl",
        root / "topics.json",
        *sorted((root / "stories").glob("*.jsonl")),
    ]


def _docs_from_text(text: str) -> Iterator[str]:
    for para in text.split("\n\n"):
        para = para.strip()
        if para:
            yield para


def check_sources(sources: Sequence[str]) -> None:
    """Fail fast, before any model loads or file is written, on a corpus source that
    cannot be read: a missing file, a wrong suffix, or a bad start (the first 64 KiB
    must be UTF-8, and a .jsonl file's first records valid)."""
    for src in sources:
        if src in BUNDLED_CORPUS or src.startswith("hf:"):
            continue
        p = Path(src)
        if not p.is_file():
            raise EmosaeError(
                f"{src}: no such corpus file or bundled corpus ({', '.join(BUNDLED_CORPUS)})"
            )
        if not p.name.endswith((".txt", ".txt.gz", ".jsonl")):
            raise EmosaeError(f"{src}: corpus files must be .txt, .txt.gz or .jsonl")
        opener = gzip.open if p.name.endswith(".gz") else open
        try:
            with opener(p, "rb") as f:
                head = f.read(1 << 16)
        except (OSError, EOFError) as e:
            raise EmosaeError(f"{src}: cannot read ({e})") from None
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 4:  # not just a character cut at the 64 KiB mark
                raise EmosaeError(f"{src}: not UTF-8 text (byte {e.start}: {e.reason})") from None
            text = head[: e.start].decode("utf-8")
        if p.suffix == ".jsonl":
            lines = text.splitlines()[:-1] if len(head) == 1 << 16 else text.splitlines()
            for _ in _records(p, lines, ("text",)):
                pass


def iter_corpus(sources: Sequence[str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield (source, document) pairs of general text.

    `sources` entries may be bundled corpus names (default: all of `BUNDLED_CORPUS`),
    paths to `.txt`/`.txt.gz` files (documents separated by blank lines) or `.jsonl`
    files (a "text" field per line), or `hf:<dataset>` for a Hugging Face dataset's
    train split (needs the `datasets` package and hub access).
    """
    for src in sources or BUNDLED_CORPUS:
        if src in BUNDLED_CORPUS:
            yield from ((src, d) for d in _docs_from_text(_read_text(corpus_path(src))))
        elif src.startswith("hf:"):
            try:
                import datasets  # type: ignore[import-not-found]
            except ImportError:
                raise EmosaeError(
                    f"{src}: Hugging Face datasets need `pip install datasets`"
                ) from None
            try:
                ds = datasets.load_dataset(src[3:], split="train", streaming=True)
            except Exception as e:  # noqa: BLE001 - hub errors come in many types
                raise EmosaeError(
                    f"{src}: could not load from the hub: {str(e).splitlines()[0]}"
                ) from None
            yield from ((src, r["text"]) for r in ds)
        else:
            p = Path(src)
            if not p.is_file():
                raise EmosaeError(
                    f"{src}: no such corpus file or bundled corpus ({', '.join(BUNDLED_CORPUS)})"
                )
            if p.suffix == ".jsonl":
                yield from ((src, r["text"]) for _, r in _read_jsonl(p, ("text",)))
            elif p.name.endswith((".txt", ".txt.gz")):
                yield from ((src, d) for d in _docs_from_text(_read_text(p)))
            else:
                raise EmosaeError(f"{src}: corpus files must be .txt, .txt.gz or .jsonl")
