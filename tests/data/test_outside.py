"""The outside corpus: the shipped file keeps its promises (every bundled emotion, ten
texts in five registers, short, naming no concept, sharing no 8-word run with itself or
the stories), and every kind of bad file is refused in one line naming file and line."""

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.data.checks import forbidden_hits, shared_runs, words
from emosae.data.concepts import load_concept_set
from emosae.data.outside import DEFAULT_PATH, REGISTERS, OutsideText, load_outside

EXAMPLE = Path(__file__).parents[2] / "examples" / "social_concepts"


def test_shipped_corpus_covers_every_emotion_in_every_register():
    texts = load_outside()
    by = defaultdict(list)
    for t in texts:
        by[t.concept].append(t)
    assert sorted(by) == sorted(data.emotion_names())
    for c, ts in by.items():
        assert len(ts) >= 10, c
        per = Counter(t.register for t in ts)
        assert set(per) == set(REGISTERS) and min(per.values()) >= 2, c
    assert min(Counter(t.register for t in texts).values()) >= 100
    assert [t.line for t in texts] == list(range(1, len(texts) + 1))


def test_shipped_corpus_is_short_text():
    by = defaultdict(list)
    for t in load_outside():
        n = len(words(t.text))
        assert 8 <= n <= 45, (t.line, n)
        by[t.concept].append(n)
    for c, ns in by.items():
        assert sum(n <= 25 for n in ns) >= 4, c
        assert min(ns) <= 12, c  # one very short text per concept


def test_shipped_corpus_names_no_concept_and_copies_nothing():
    emotions = {e.name: e.forbidden for e in data.load_emotions()}
    every = [w for name, forb in emotions.items() for w in (name, *forb)]
    texts = load_outside()
    for t in texts:  # no emotion's name or forbidden words, not only its own
        assert not forbidden_hits(t.text, every), t.line
        if t.register == "dialogue":
            assert t.text.count('"') >= 2, t.line  # quoted speech with a speaker tag
    assert shared_runs([t.text for t in texts]) == []
    stories = [s.text for s in data.load_stories("all")]
    # no 8-word run shared with a bundled story: written apart from them
    runs = shared_runs(stories + [t.text for t in texts])
    assert [r for r in runs if r[1] >= len(stories)] == []


def _write(tmp_path: Path, recs: list, name: str = "texts.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return p


def _rec(concept: str, text: str, register: str = "post") -> dict:
    return {"concept": concept, "register": register, "text": text}


GOOD = [
    _rec("calm", "The pipe burst, so I shut the valve and put the kettle on."),
    _rec("afraid", "Footsteps behind me in the dark lane; I walked faster.", "diary"),
]
ALLOWED = {"calm", "afraid"}


def test_user_file_loads_with_allowed_concepts(tmp_path):
    p = _write(tmp_path, GOOD)
    got = load_outside(p, allowed=ALLOWED)
    assert got == [
        OutsideText("calm", "post", GOOD[0]["text"], 1),
        OutsideText("afraid", "diary", GOOD[1]["text"], 2),
    ]
    with pytest.raises(EmosaeError, match=r":2: concept 'afraid' has 1 text\(s\), needs >= 2"):
        load_outside(p, allowed=ALLOWED, min_texts=2)


BAD = {
    "unknown concept": (
        [*GOOD, _rec("grumpy", "He kicked the door shut.")],
        3,
        "unknown concept 'grumpy'",
    ),
    "not in allowed": (
        [*GOOD, _rec("sad", "The cafe closed for good.")],
        3,
        "unknown concept 'sad'",
    ),
    "empty text": ([GOOD[0], _rec("afraid", "   "), GOOD[1]], 2, "empty text for concept 'afraid'"),
    "names its concept": (
        [GOOD[0], _rec("afraid", "I was afraid of the dark.")],
        2,
        "forbidden word(s) afraid",
    ),
    "near synonym": ([_rec("calm", "All serene here."), GOOD[1]], 1, "forbidden word(s) serene"),
    "in a compound": (
        [GOOD[0], _rec("afraid", "A fear-soaked night.")],
        2,
        "forbidden word(s) fear",
    ),
    "bad JSON": ([GOOD[0], '{"concept": "afraid", "text": ', GOOD[1]], 2, "malformed JSON"),
    "not an object": ([GOOD[0], '["afraid"]', GOOD[1]], 2, "expected a JSON object"),
    "missing key": (
        [GOOD[0], {"concept": "afraid", "text": "Dark lane."}],
        2,
        "lacks keys ['register']",
    ),
    "unknown register": (
        [GOOD[0], _rec("afraid", "Dark lane, fast steps.", "poem")],
        2,
        "unknown register 'poem'",
    ),
    "duplicate": ([*GOOD, _rec("calm", GOOD[0]["text"].upper(), "diary")], 3, "the same as line 1"),
    "no texts": (
        [GOOD[0], "", _rec("calm", "Slow breath, still water.")],
        3,
        "ends with no text of concept 'afraid'",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_is_one_line_naming_file_and_line(tmp_path, case):
    recs, line, msg = BAD[case]
    p = _write(tmp_path, recs)
    # "grumpy" is checked against all 48 bundled emotions; the rest against two of them
    with pytest.raises(EmosaeError) as e:
        load_outside(p, allowed=None if case == "unknown concept" else ALLOWED)
    text = str(e.value)
    assert "\n" not in text
    assert re.match(rf"{re.escape(str(p))}:{line}: ", text), text
    assert msg in text, text


def test_forbidden_words_come_from_the_given_concept_set(tmp_path):
    cs = load_concept_set(EXAMPLE)
    recs = [_rec(c, f"A plain line, number {i}, nothing more.") for i, c in enumerate(cs.names)]
    recs[0] = _rec("deception", "He lied about the bill and pocketed the change.")
    p = _write(tmp_path, recs)
    with pytest.raises(EmosaeError, match=r":1: text of 'deception' names its concept"):
        load_outside(p, concepts=cs)
    # the bundled emotions do not forbid "lied": the same file passes their words
    assert len(load_outside(p, allowed=set(cs.names))) == len(cs.names)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(EmosaeError, match=r"nope\.jsonl: file not found"):
        load_outside(tmp_path / "nope.jsonl")


def test_default_path_is_package_data():
    assert DEFAULT_PATH.is_file() and DEFAULT_PATH.parent.name == "outside"
    assert (DEFAULT_PATH.parent / "README.md").is_file()
