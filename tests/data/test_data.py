import json
from collections import Counter, defaultdict

import pytest

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.data import checks

REQUIRED = (
    "happy blissful excited calm content loving grateful proud playful amused afraid terrified "
    "nervous anxious desperate angry hostile offended spiteful sad gloomy brooding guilty ashamed "
    "lonely surprised bored tired jealous suspicious vulnerable reflective"
).split()


def test_emotions_cover_required_and_all_clusters():
    emos = data.load_emotions()
    names = [e.name for e in emos]
    assert len(names) >= 48 and len(set(names)) == len(names)
    assert set(REQUIRED) <= set(names)
    assert {e.cluster for e in emos} == set(data.clusters()) and len(data.clusters()) == 10
    paper = json.loads((data.RESOURCES / "paper_lists.json").read_text())
    for e in emos:
        assert e.name in paper["clusters"][e.cluster], e.name  # the paper's own cluster
        assert e.forbidden[0] == e.name


def test_no_story_names_its_emotion():
    forb = {e.name: e.forbidden for e in data.load_emotions()}
    hits = [(s.id, checks.forbidden_hits(s.text, forb[s.concept])) for s in data.load_stories()]
    assert [h for h in hits if h[1]] == []


def test_forbidden_scan_catches_inflections_and_case():
    assert checks.forbidden_hits("She was HAPPY, joy's bright face", ["happy", "joy"]) == [
        "happy",
        "joy",
    ]
    assert checks.forbidden_hits("a joy-filled day", ["joy"]) == ["joy"]
    assert checks.forbidden_hits("unhappy enjoyment", ["happy", "joy"]) == []


def test_story_counts_lengths_and_topics():
    stories = data.load_stories()
    topics = data.load_topics()
    assert len(topics.all) >= 24
    by_emo = defaultdict(list)
    for s in stories:
        by_emo[s.concept].append(s)
        assert checks.MIN_WORDS <= len(checks.words(s.text)) <= checks.MAX_WORDS, s.id
    assert set(by_emo) == set(data.emotion_names())
    for emo, ss in by_emo.items():
        assert len(ss) >= 16 and len({s.topic for s in ss}) >= 16, emo
        assert len({s.topic for s in ss}) == len(ss), f"{emo}: a topic is used twice"
        persons = Counter(s.person for s in ss)
        assert persons["first"] >= 4 and persons["third"] >= 4, emo
        assert {s.topic for s in ss} & set(topics.heldout), emo


def test_no_shared_eight_word_runs():
    texts = [s.text for s in data.load_stories()] + [
        d.user + " " + d.assistant for d in data.load_dialogues()
    ]
    assert checks.shared_runs(texts) == []


def test_shared_run_detector_ignores_names_only():
    a = "Then Maria walked slowly down to the old harbour wall that evening."
    b = "Then Tom walked slowly down to the old harbour wall that evening."
    assert checks.shared_runs([a, b]) != []
    assert (
        checks.shared_runs([a, "Completely different words appear in this one sentence here."])
        == []
    )


def test_heldout_topics_never_in_train_split():
    held = set(data.load_topics().heldout)
    assert 0.2 <= len(held) / len(data.load_topics().all) <= 0.3
    assert not {s.topic for s in data.load_stories("train")} & held
    assert {s.topic for s in data.load_stories("heldout")} == held
    assert not {d.topic for d in data.load_dialogues("train")} & held
    assert len(data.load_stories("train")) + len(data.load_stories("heldout")) == len(
        data.load_stories()
    )


def test_dialogues_count_and_flatness():
    dl = data.load_dialogues()
    assert len(dl) >= 200
    assert {d.topic for d in dl} == set(data.load_topics().all)
    names = set(data.emotion_names())
    for d in dl:
        assert not set(checks.words(d.user + " " + d.assistant)) & names, d.id


def test_norms_lookup():
    norms = data.load_norms()
    assert len(norms) == 13905  # 13,915 rows; 10 lemmas differ only in case
    en = data.emotion_norms()
    assert en["happy"].valence > 7 > 3 > en["sad"].valence
    assert en["calm"].arousal < en["excited"].arousal
    missing = [k for k, v in en.items() if v is None]
    assert len(missing) <= 4, missing


def test_malformed_story_names_file_and_line(tmp_path):
    root = tmp_path / "res"
    (root / "stories").mkdir(parents=True)
    for f in ("emotions.json", "topics.json"):
        (root / f).write_text((data.RESOURCES / f).read_text())
    good = json.dumps({"emotion": "happy", "topic": "work", "person": "first", "text": "x"})
    (root / "stories" / "happy.jsonl").write_text(good + "\n{not json\n")
    with pytest.raises(EmosaeError, match=r"happy\.jsonl:2: malformed JSON"):
        data.load_stories(root=root)
    data._all_stories.cache_clear()
    bad = json.dumps({"emotion": "zesty", "topic": "work", "person": "first", "text": "x"})
    (root / "stories" / "happy.jsonl").write_text(good + "\n" + bad + "\n")
    with pytest.raises(EmosaeError, match=r"happy\.jsonl:2: unknown emotion 'zesty'"):
        data.load_stories(root=root)


def test_unknown_cluster_is_reported(tmp_path):
    d = json.loads((data.RESOURCES / "emotions.json").read_text())
    d["emotions"][3]["cluster"] = "Mild Whimsy"
    (tmp_path / "emotions.json").write_text(json.dumps(d))
    with pytest.raises(EmosaeError, match="unknown cluster 'Mild Whimsy'"):
        data.load_emotions(tmp_path)


def test_general_corpus_and_user_files(tmp_path):
    docs = list(data.iter_corpus(["moby_dick"]))
    assert len(docs) > 500 and all(src == "moby_dick" for src, _ in docs)
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "b.txt").write_text("para one\n\npara two\n\n\npara three")
    assert [d for _, d in data.iter_corpus([str(tmp_path / "a.jsonl")])] == ["one", "two"]
    assert len(list(data.iter_corpus([str(tmp_path / "b.txt")]))) == 3
    with pytest.raises(EmosaeError, match="no such corpus"):
        list(data.iter_corpus([str(tmp_path / "missing.txt")]))
