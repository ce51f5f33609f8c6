"""Strength and layer calibration: the recommendation rule by hand, the one owner of
"steer replies and measure them" checked against steering one reply at a time, and a
small real calibration whose strength `apply(model)` then reproduces."""

import math

import numpy as np
import pytest

from emosae.core.errors import EmosaeError
from emosae.experiments.calibration import CalibrationConfig, calibrate, recommend


def test_recommend_is_the_largest_strength_before_a_budget_breaks():
    s = [-0.4, 0.0, 0.2, 0.4, 0.8, 1.6]
    assert recommend(s, [9.0, 1.0, 1.2, 1.9, 2.5, 1.1], 2.0) == 0.4  # 1.6 after a break
    assert recommend(s, [1.0, 1.0, 2.1, 1.0, 1.0, 1.0], 2.0) is None
    assert recommend(s, [1.0, 1.0, 1.0, math.nan, 1.0, 1.0], 2.0) == 0.2  # no words: no
    kl = [0.0, 0.0, 0.01, 0.03, 0.2, 0.0]
    assert recommend(s, [1.0] * 6, 2.0, kl, 0.05) == 0.4  # the KL budget breaks at 0.8
    assert recommend(s, [1.0] * 6, 2.0, kl, None) == 1.6


def test_bad_sweeps_are_refused():
    for kw in (
        {"strengths": (float("nan"),)},
        {"strengths": (-0.2, 0.2)},
        {"budget": 1.0},
        {"n_prompts": 0},
        {"n_heldout": -1},
        {"kl_budget": 0.0},
    ):
        with pytest.raises(EmosaeError):
            CalibrationConfig(**kw)


@pytest.fixture(scope="module")
def happy():
    from emosae.steering.directions import load_directions

    return load_directions(layer=15)["happy"]


@pytest.mark.kernel_paths
@pytest.mark.real
def test_batched_steered_replies_equal_steering_one_reply_at_a_time(real_model, happy):
    from emosae.experiments.steered import steered_replies
    from emosae.lm.chat import chat_reply, reply_perplexity

    prompts = ["Tell me about your weekend.", "What did you have for breakfast?"]
    sr = steered_replies(real_model, happy, prompts, [0.3, -0.3], max_new_tokens=10)
    one = steered_replies(real_model, happy, prompts, [0.3, -0.3], max_new_tokens=10, batch=1)
    assert sr.strengths == [-0.3, 0.0, 0.3] and sr.replies == one.replies
    assert np.allclose(sr.nll, one.nll, atol=1e-3) and np.allclose(sr.kl, one.kl, atol=1e-3)
    assert np.allclose(sr.readout, one.readout, atol=1e-3)
    for j, p in enumerate(prompts):  # each row is what steering that one reply gives
        assert sr.replies[1][j] == chat_reply(real_model, p, max_new_tokens=10)
        with happy.apply(real_model, 0.3):
            assert sr.replies[2][j] == chat_reply(real_model, p, max_new_tokens=10)
        ppl = reply_perplexity(real_model, p, sr.replies[2][j])
        assert math.exp(sr.nll[2, j]) == pytest.approx(ppl, rel=1e-3)
    assert np.all(np.abs(sr.kl[1]) < 1e-5) and np.all(sr.kl[[0, 2]] > 1e-3)
    assert sr.ppl_ratio()[1] == 1.0
    su = sr.success(0.3)
    assert su["k"] == int((sr.readout[2] > sr.readout[1]).sum()) and su["n"] == 2


@pytest.mark.real
def test_calibration_chooses_a_layer_and_apply_reproduces_its_effect(real_model, happy):
    from emosae.lm.chat import chat_reply
    from emosae.reading.trace import Basis, Readout
    from emosae.steering.directions import steering_candidates

    cands = steering_candidates(None, [14, 17])["happy"]
    assert {v.readout.hook for v in cands.values()} == {happy.hook_name}  # read at 15
    cfg = CalibrationConfig(strengths=(0.2, 0.4), n_prompts=1, n_heldout=3, max_new_tokens=10)
    cal = calibrate(happy, real_model, cfg=cfg, candidates=cands)
    assert set(cal.layers) == {"14", "17"} and cal.layer in (14, 17)
    assert cal.hook == cands[cal.layer].hook_name and cal.strengths == [0.0, 0.2, 0.4]
    r = cal.recommended
    assert r == cal.layers[str(cal.layer)]["recommended"]
    assert r is None or cal.ppl_ratio[cal.strengths.index(r)] <= cfg.budget
    if r is None:
        return
    h = cal.heldout
    assert h["n_prompts"] == 3 and h["success"]["n"] == 3 and 0 <= h["success"]["rate"] <= 1
    assert h["valence_shift"] == cal.valence_shift and h["strength"] == r
    # The README's way: the calibrated vector, apply(model), a chat reply: the same reply
    # and the same readout shift the calibration measured on its prompt.
    vec = cands[cal.layer].with_default_strength(r)
    prompt = "Tell me about your weekend."
    with vec.apply(real_model):
        reply = chat_reply(real_model, prompt, max_new_tokens=10)
    assert reply == cal.replies[str(r)]
    plain = chat_reply(real_model, prompt, max_new_tokens=10)
    ro = Readout(real_model, Basis.single(vec)).at_reply([reply, plain])[:, 0]
    assert float(ro[0] - ro[1]) == pytest.approx(cal.readout[cal.strengths.index(r)], abs=1e-3)
