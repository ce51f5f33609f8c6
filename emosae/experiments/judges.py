"""Judges of a reply that no steering vector was fitted on: outside measures of a text's
tone, so that a steered reply is judged by something other than the direction that
steered it (the own-direction readout is not independent of the vector).

  VADER     compound valence in [-1, 1] (Hutto & Gilbert 2014; `vaderSentiment`'s rule
            set and lexicon, which ship inside the package); nan for a text with no letters
  NRC       share of the text's words in one of the NRC Emotion Lexicon's eight
            categories, per 100 words (Mohammad & Turney 2013; the word list `nrclex`
            ships, read directly: its TextBlob tokenizer wants NLTK downloads). Words are
            `measures.words`, looked up like the Warriner norms; nan for a text with no
            words. Which category a concept should raise is data/resources/nrc_map.json,
            with the reason for each mapping and for each concept left unmapped
  Warriner  mean valence or arousal (1-9) of the normed words (`measures.text_norms`)

Each judge carries the direction a concept should move it (+1 up, -1 down, 0 none
expected): NRC +1 for the concept's category; VADER and Warriner valence by the
concept name's own Warriner valence (<= 4 down, >= 6 up, between: none, the issue's
"valenced concept" rule), Warriner arousal likewise by the name's arousal.

`distinct2` is the degeneracy measure beside them: distinct bigrams over bigrams of the
text's tokens (words and single punctuation marks), so "!!!!!!!!" scores 1/7.

Not done here: a trained emotion classifier (none ships offline).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

from emosae.core.errors import EmosaeError
from emosae.data import RESOURCES, emotion_norms, read_json
from emosae.experiments.measures import lookup, text_norms, words

NRC_CATEGORIES = (
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "sadness",
    "surprise",
    "trust",
)
NRC_MAP = RESOURCES / "nrc_map.json"
VALENCED = (4.0, 6.0)
"""A concept name's Warriner norm at or below the first moves its judge down, at or above
the second up; between them no direction is expected."""


class Judge(Protocol):
    @property
    def name(self) -> str:
        """What the judge measures, for tables."""
        ...

    @property
    def direction(self) -> int:
        """+1 / -1: the way the concept should move the score; 0: none expected."""
        ...

    def score(self, text: str) -> float: ...


@cache
def _vader():
    try:
        from vaderSentiment.vaderSentiment import (  # type: ignore[import-untyped]
            SentimentIntensityAnalyzer,
        )
    except ImportError:
        raise EmosaeError(
            "the VADER judge needs vaderSentiment (pip install vaderSentiment)"
        ) from None
    return SentimentIntensityAnalyzer()


@dataclass(frozen=True)
class Vader:
    """VADER compound valence of the text (-1 to 1)."""

    direction: int = 0
    name: str = "VADER compound"

    def score(self, text: str) -> float:
        if not re.search(r"[A-Za-z]", text):
            return math.nan
        return float(_vader().polarity_scores(text)["compound"])


@cache
def nrc_lexicon() -> dict[str, frozenset[str]]:
    """The NRC Emotion Lexicon as `nrclex` ships it: word -> its categories."""
    from importlib import resources

    try:
        raw = read_json(Path(str(resources.files("nrclex.data").joinpath("nrc_en.json"))))
    except ImportError:
        raise EmosaeError("the NRC judge needs nrclex (pip install nrclex)") from None
    return {w: frozenset(cats) for w, cats in raw.items()}


@dataclass(frozen=True)
class Nrc:
    """Words of the text in NRC category `category`, per 100 words."""

    category: str
    direction: int = 1

    def __post_init__(self) -> None:
        if self.category not in NRC_CATEGORIES:
            raise EmosaeError(f"unknown NRC category {self.category!r} (have {NRC_CATEGORIES})")

    @property
    def name(self) -> str:
        return f"NRC {self.category} /100 words"

    def score(self, text: str) -> float:
        ws = words(text)
        if not ws:
            return math.nan
        lex = nrc_lexicon()
        hits = sum(self.category in (lookup(w, lex) or ()) for w in ws)
        return 100.0 * hits / len(ws)


@dataclass(frozen=True)
class Warriner:
    """Mean Warriner `dimension` (1-9) of the text's normed words."""

    dimension: Literal["valence", "arousal"]
    direction: int = 0

    @property
    def name(self) -> str:
        return f"Warriner {self.dimension}"

    def score(self, text: str) -> float:
        v, a, _ = text_norms(text)
        return v if self.dimension == "valence" else a


def nrc_map() -> dict[str, str]:
    """concept -> NRC category, for the concepts where one is defensible (nrc_map.json)."""
    return {c: m["category"] for c, m in read_json(NRC_MAP)["map"].items()}


def nrc_judge(concept: str) -> Nrc:
    """The NRC judge of `concept`; a concept with no mapping is refused."""
    cat = nrc_map().get(concept)
    if cat is None:
        raise EmosaeError(f"concept {concept!r} has no NRC category (see {NRC_MAP.name})")
    return Nrc(cat)


def name_direction(concept: str, dimension: Literal["valence", "arousal"]) -> int:
    """+1 / -1 / 0: the Warriner norm of the concept's name against `VALENCED`
    (0 for a name with no norm)."""
    n = emotion_norms().get(concept)
    x = getattr(n, dimension) if n is not None else text_norms(concept)[dimension == "arousal"]
    if not math.isfinite(x):
        return 0
    return 1 if x >= VALENCED[1] else -1 if x <= VALENCED[0] else 0


def judges_for(concept: str) -> dict[str, Judge]:
    """The outside judges of `concept`, keyed by the measure of `SteeredReplies` they
    fill: "vader", "nrc" (only for a mapped concept), "valence", "arousal"."""
    out: dict[str, Judge] = {"vader": Vader(name_direction(concept, "valence"))}
    if concept in nrc_map():
        out["nrc"] = nrc_judge(concept)
    out["valence"] = Warriner("valence", name_direction(concept, "valence"))
    out["arousal"] = Warriner("arousal", name_direction(concept, "arousal"))
    return out


_TOKEN = re.compile(r"\w+|[^\w\s]")


def distinct2(text: str) -> float:
    """Distinct bigrams / bigrams of the text's tokens (lowercased words and single
    punctuation marks); nan with fewer than two tokens."""
    toks = _TOKEN.findall(text.lower())
    grams = list(zip(toks, toks[1:], strict=False))
    return len(set(grams)) / len(grams) if grams else math.nan
