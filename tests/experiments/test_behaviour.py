import numpy as np
import pytest
import torch

from emosae import data
from emosae.experiments.behaviour import fit_elo
from emosae.experiments.measures import text_norms


def test_text_norms_by_hand():
    norms = data.load_norms()
    v, a, n = text_norms("Happy puppies!! xqzt", norms)
    assert n == 2  # "puppies" is looked up as "puppy"; "xqzt" has no norm
    assert v == pytest.approx(np.mean([norms["happy"].valence, norms["puppy"].valence]))
    assert a == pytest.approx(np.mean([norms["happy"].arousal, norms["puppy"].arousal]))
    assert np.isnan(text_norms("xqzt zzzq", norms)[0])
    assert text_norms("wonderful sunshine", norms)[0] > text_norms("funeral disease", norms)[0]


def test_fit_elo_recovers_order():
    true = np.array([0.0, 1.0, 2.0, 3.0])
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j] * 5
    p = [1 / (1 + np.exp(-(true[i] - true[j]))) for i, j in pairs]
    elo = fit_elo(4, pairs, p)
    assert list(np.argsort(elo)) == [0, 1, 2, 3]
    assert elo.mean() == pytest.approx(1500, abs=1e-3)


@pytest.mark.real
def test_positive_valence_steering_raises_text_valence(real_model):
    from emosae.lm.chat import chat_reply, render_chat
    from emosae.steering.directions import load_directions

    vec = load_directions()["happy"]  # shipped default directions
    norms = data.load_norms()
    prompts = data.load_neutral_prompts()[:3]
    vals = {}
    for s in (-0.2, 0.2):
        texts = []
        for p in prompts:
            start = len(render_chat(real_model, p).tokens) - 1
            with vec.apply(real_model, s, from_pos=start):
                texts.append(chat_reply(real_model, p, max_new_tokens=24))
        vals[s] = np.nanmean([text_norms(t, norms)[0] for t in texts])
    assert vals[0.2] > vals[-0.2]


@pytest.mark.real
def test_ab_logodds_batched_equals_single(real_model):
    from emosae.experiments.behaviour import ab_logodds
    from emosae.lm.chat import render_chat

    seqs = [
        render_chat(real_model, f"Would you prefer (A) {a} or (B) {b}? Answer with A or B.").tokens
        for a, b in (("tea", "coffee"), ("a long walk in the rain", "sleep"))
    ]
    both = ab_logodds(real_model, seqs)
    one = torch.stack([ab_logodds(real_model, [s])[0] for s in seqs])
    assert torch.allclose(both, one, atol=1e-3)


def test_experiments_say_why_they_skip_absent_concepts():
    from emosae.experiments.behaviour import EXPERIMENTS, ExperimentConfig, why_skipped

    cfg = ExperimentConfig()
    social = ["deception", "urgency", "generosity", "competition", "teaching"]
    assert all(why_skipped(n, cfg, data.emotion_names()) is None for n in EXPERIMENTS)
    assert why_skipped("traces", cfg, social) is None  # reads any concepts
    msg = why_skipped("preferences", cfg, social)
    assert msg == "needs at least 1 of the concepts blissful, hostile; the concept set has none"
    assert why_skipped("preferences", cfg, [*social, "hostile"]) is None
    assert "too few" in why_skipped("scenarios", cfg, [*social, "afraid"])  # needs 2
