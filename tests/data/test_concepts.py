"""Concept sets: the example set and the bundled emotions load through the same checks,
and every kind of bad set is refused in one line naming the file and line, before
anything is written."""

import json
import shutil
from pathlib import Path

import pytest

from emosae import data
from emosae.cli.main import main
from emosae.core.errors import EmosaeError
from emosae.data.concepts import MIN_TOPICS, bundled, default_heldout, load_concept_set

EXAMPLE = Path(__file__).parents[2] / "examples" / "social_concepts"


def test_example_set_loads_with_its_split():
    cs = load_concept_set(EXAMPLE)
    assert cs.names == ["deception", "urgency", "generosity", "competition", "teaching"]
    assert cs.heldout_topics == ("garden", "hotel", "library")
    assert len(cs.stories) == 60 and cs.neutral is None  # bundled neutral dialogues
    assert sum(cs.is_heldout(s) for s in cs.stories) == 15
    assert len(cs.neutral_records()) == len(data.load_dialogues("train"))


def test_bundled_emotions_are_a_concept_set():
    cs = bundled()
    assert cs.names == data.emotion_names() and cs.groups == data.clusters()
    assert len(cs.stories) == 768 and cs.heldout_topics == data.load_topics().heldout
    happy = cs.concepts[cs.names.index("happy")]
    assert happy.valence == data.load_norms()["happy"].valence


def test_default_split_is_a_quarter_and_stable(tmp_path):
    topics = [f"t{i}" for i in range(12)]
    held = default_heldout(topics)
    assert len(held) == 3 and held == default_heldout(list(reversed(topics)))
    d = _copy(tmp_path)
    (d / "split.json").unlink()
    cs = load_concept_set(d)
    assert cs.heldout_topics == default_heldout([s.topic for s in cs.stories])
    assert cs.fingerprint != load_concept_set(EXAMPLE).fingerprint


def test_neutral_file_both_record_shapes(tmp_path):
    d = _copy(tmp_path)
    (d / "neutral.jsonl").write_text(
        '{"text": "The bus runs every ten minutes."}\n{"user": "Hi", "assistant": "Hello."}\n'
    )
    assert load_concept_set(d).neutral == ("The bus runs every ten minutes.", ("Hi", "Hello."))


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "set"
    shutil.copytree(EXAMPLE, d)
    return d


def _rewrite(path: Path, edit) -> None:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(recs)))


def _forbidden(d: Path) -> None:
    def edit(recs):
        recs[4]["text"] += " He lied about it later."
        return recs

    _rewrite(d / "stories.jsonl", edit)


def _few_topics(d: Path) -> None:
    # urgency keeps kitchen, office and the held-out hotel only: 3 topics
    keep = {"kitchen", "office", "hotel"}
    _rewrite(
        d / "stories.jsonl",
        lambda rs: [r for r in rs if r["concept"] != "urgency" or r["topic"] in keep],
    )


def _unknown(d: Path) -> None:
    def edit(recs):
        recs[6]["concept"] = "bravery"
        return recs

    _rewrite(d / "stories.jsonl", edit)


def _malformed(d: Path) -> None:
    lines = (d / "concepts.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-1]  # drop the closing brace
    (d / "concepts.jsonl").write_text("\n".join(lines) + "\n")


def _empty(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


def _bad_split(d: Path) -> None:
    (d / "split.json").write_text('{"heldout_topics": ["moon"]}')


BAD = [
    (_forbidden, r"stories\.jsonl:5: story of 'deception' contains forbidden word\(s\) lied"),
    (_few_topics, rf"concepts\.jsonl:2: concept 'urgency' has stories on 3 topic.*>= {MIN_TOPICS}"),
    (_unknown, r"stories\.jsonl:7: unknown concept 'bravery'"),
    (_malformed, r"concepts\.jsonl:3: malformed JSON"),
    (_empty, r"concepts\.jsonl: missing"),
    (_bad_split, r"split\.json:1: held-out topic\(s\) with no stories: moon"),
]


@pytest.mark.parametrize("spoil,match", BAD, ids=[f.__name__.strip("_") for f, _ in BAD])
def test_bad_concept_set_is_one_line_error_and_nothing_written(tmp_path, capsys, spoil, match):
    d = _copy(tmp_path)
    spoil(d)
    with pytest.raises(EmosaeError, match=match):
        load_concept_set(d)
    out = tmp_path / "probes"
    for argv in (
        ["probes", "--concepts", str(d), "--out", str(out)],
        ["run", "--preset", "smoke", "--concepts", str(d), "--out", str(tmp_path / "run")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("emosae: error:"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # nothing written
