"""Outside judges of steered replies: each judge on texts counted by hand, the concept ->
NRC category table, the success rule (direction, degenerate replies) on hand-built
arrays, and on the real model the shipped `happy` vector's replies judged."""

import math

import numpy as np
import pytest

from emosae.core.errors import EmosaeError
from emosae.data import emotion_names
from emosae.data.io import read_json
from emosae.experiments.judges import (
    NRC_CATEGORIES,
    NRC_MAP,
    Nrc,
    Vader,
    Warriner,
    distinct2,
    judges_for,
    name_direction,
    nrc_judge,
    nrc_lexicon,
)
from emosae.experiments.steered import SteeredReplies


def test_vader_orders_positive_over_negative_and_cannot_judge_no_letters():
    v = Vader()
    pos, neg = v.score("What a wonderful, happy day!"), v.score("This is awful and sad.")
    assert pos > 0.5 and neg < -0.5
    assert v.score("The bus leaves at noon.") == 0.0  # no sentiment words: neutral, judged
    assert math.isnan(v.score("!!!!!!!!")) and math.isnan(v.score(""))


def test_nrc_counts_category_words_per_100_by_hand():
    lex = nrc_lexicon()
    assert "joy" in lex["laugh"] and "joy" in lex["friend"]  # "laughed" -> "laugh"
    assert not any(w in lex for w in ("we", "at", "the", "party", "with", "a", "laughed"))
    text = "We laughed at the party with a friend!"  # 8 words
    assert Nrc("joy").score(text) == 100 * 2 / 8
    assert Nrc("surprise").score(text) == 100 * 1 / 8  # laugh only
    assert Nrc("trust").score(text) == 100 * 1 / 8  # friend only
    assert Nrc("fear").score(text) == 0.0
    assert math.isnan(Nrc("joy").score("!!! 42"))
    with pytest.raises(EmosaeError):
        Nrc("love")


def test_warriner_judges_are_text_norms():
    from emosae.experiments.measures import text_norms

    text = "Happy puppies in the sunshine"
    v, a, _ = text_norms(text)
    assert Warriner("valence").score(text) == v and Warriner("arousal").score(text) == a


def test_distinct2_flags_repetition():
    assert distinct2("!!!!!!!!") == pytest.approx(1 / 7)
    assert distinct2("The cat sat on the mat.") == 1.0
    assert distinct2("the cat the cat") == pytest.approx(2 / 3)
    assert math.isnan(distinct2("Hi"))


def test_nrc_map_covers_only_valid_concepts_and_categories_with_reasons():
    d = read_json(NRC_MAP)
    names = set(emotion_names())
    assert tuple(d["categories"]) == NRC_CATEGORIES
    assert set(d["map"]) | set(d["unmapped"]) == names  # every concept decided once
    assert not set(d["map"]) & set(d["unmapped"])
    for c, m in d["map"].items():
        assert m["category"] in NRC_CATEGORIES and m["why"].strip(), c
    assert all(why.strip() for why in d["unmapped"].values())
    assert nrc_judge("happy").category == "joy" and nrc_judge("afraid").category == "fear"


def test_nrc_judge_refuses_an_unmapped_concept_in_one_line():
    with pytest.raises(EmosaeError) as e:
        nrc_judge("calm")
    assert "calm" in str(e.value) and "\n" not in str(e.value)
    assert "nrc" not in judges_for("calm")


def test_directions_follow_the_concept_names_norms():
    assert name_direction("happy", "valence") == 1 and name_direction("sad", "valence") == -1
    assert name_direction("tired", "valence") == 0  # 4.29: not valenced
    assert name_direction("calm", "arousal") == -1
    j = judges_for("sad")
    assert (j["vader"].direction, j["nrc"].direction, j["valence"].direction) == (-1, 1, -1)


def _replies(vader, d2_ratio, concept="sad"):
    """A hand-built result: strengths [-1, 0, 1], two prompts."""
    vader = np.array(vader, float)
    z = np.zeros_like(vader)
    ratio = np.array(d2_ratio, float)
    return SteeredReplies(
        concept, "probe", "h", [-1.0, 0.0, 1.0], ["p", "q"], [["a", "b"]] * 3,
        z, z, z, z, z, vader, z, "sadness", ratio, ratio,
    )  # fmt: skip


def test_success_goes_the_concepts_way_and_never_counts_a_degenerate_reply():
    # sad: VADER should fall at +1 (direction -1) and rise at -1
    sr = _replies([[0.5, 0.2], [0.0, 0.0], [-0.4, -0.3]], [[1, 1], [1, 1], [1.0, 0.5]])
    assert sr.success(1.0, key="vader", direction=-1)["k"] == 1  # prompt q degenerate
    assert sr.success(1.0, key="vader", direction=-1, min_distinct2=0.4)["k"] == 2
    assert sr.success(-1.0, key="vader", direction=-1)["k"] == 2
    assert sr.success(1.0, key="vader", direction=1)["k"] == 0
    nan_ratio = _replies([[0, 0], [0, 0], [-1, -1]], [[1, 1], [1, 1], [math.nan, 1]])
    assert nan_ratio.success(1.0, key="vader", direction=-1)["k"] == 1
    j = sr.judged(1.0)
    assert j["vader"]["independent"] and not j["readout"]["independent"]
    assert j["vader"]["shift"]["mean"] == pytest.approx(-0.35)
    assert j["distinct2_ratio"] == {"median": 0.75, "degenerate": 1, "n": 2}
    with pytest.raises(EmosaeError):
        sr.success(0.0)


def test_judged_table_marks_the_own_readout_and_counts_by_the_concepts_way():
    from emosae.experiments.steering_summary import judged_headline, judged_markdown

    sr = _replies([[0.5, 0.2], [0.0, 0.0], [-0.4, -0.3]], [[1, 1], [1, 1], [1.0, 0.5]])
    rows = [{"concept": "sad", "judged": sr.judged(1.0)}, {"concept": "old", "judged": None}]
    md = judged_markdown(rows).splitlines()
    assert len(md) == 3 and "own readout (not independent)" in md[0]
    assert md[2].startswith("| sad | +1 | down: -0.35 [-0.40, -0.30]; 1/2 0.50 [")
    assert "up sadness: +0.00" in md[2] and md[2].endswith("| 0.75 (1/2) |")
    h = judged_headline(rows)
    assert h["judged_vectors"] == 1 and h["vader"]["shift_ci_excludes_0_concepts_way"] == 1
    assert h["readout"]["shift_ci_excludes_0_concepts_way"] == 0  # no shift at all
    assert h["vader"]["success_ci_above_half"] == 0 and h["median_distinct2_ratio"] == 0.75


@pytest.mark.real
def test_shipped_happy_replies_get_judged_with_a_working_repetition_penalty(real_model):
    import torch

    from emosae import load_directions
    from emosae.experiments.steered import steered_replies
    from emosae.lm.chat import chat_reply, render_chat, stop_token_ids

    happy = load_directions()["happy"]
    prompts = ["Tell me about your weekend.", "Describe a room you know well.", "Hi"]
    n, pen = 12, 1.3
    sr = steered_replies(
        real_model, happy, prompts, [0.3], max_new_tokens=n, repetition_penalty=pen
    )
    for key in ("vader", "nrc", "valence", "arousal", "distinct2", "distinct2_ratio"):
        assert getattr(sr, key).shape == (2, 3), key
    texts = np.array(sr.replies)
    has_words = np.vectorize(lambda t: any(c.isalpha() for c in t))(texts)
    assert has_words.any()
    assert np.isfinite(sr.vader[has_words]).all() and np.isfinite(sr.nrc[has_words]).all()
    assert sr.nrc_category == "joy" and set(sr.judged(0.3)) >= {"vader", "nrc", "readout"}
    # the unsteered replies are a by-hand greedy loop with the penalty (no KV cache)
    stops, plain = stop_token_ids(real_model), []
    for j, p in enumerate(prompts):
        ids, out = render_chat(real_model, p).tokens.tolist(), []
        for _ in range(n):
            with torch.no_grad():
                lg = real_model(torch.tensor([ids + out]))[0, -1]
            seen = torch.tensor(sorted(set(ids + out)))
            lg[seen] = torch.where(lg[seen] > 0, lg[seen] / pen, lg[seen] * pen)
            if (t := int(lg.argmax())) in stops:
                break
            out.append(t)
        assert (
            sr.replies[sr.row(0.0)][j]
            == real_model.tokenizer.decode(out, skip_special_tokens=True).strip()
        )
        plain.append(chat_reply(real_model, p, max_new_tokens=n))
    assert plain != sr.replies[sr.row(0.0)]  # the penalty changed something
