"""Strength calibration: the recommendation rule by hand, and a small real sweep."""

import math

import numpy as np
import pytest

from emosae.core.errors import EmosaeError
from emosae.steering.calibration import CalibrationConfig, calibrate, recommend


def test_recommend_is_the_largest_strength_before_the_budget_breaks():
    s = [-0.4, 0.0, 0.2, 0.4, 0.8, 1.6]
    assert recommend(s, [9.0, 1.0, 1.2, 1.9, 2.5, 1.1], 2.0) == 0.4  # 1.6 after a break
    assert recommend(s, [1.0, 1.0, 2.1, 1.0, 1.0, 1.0], 2.0) is None
    assert recommend(s, [1.0, 1.0, 1.0, math.nan, 1.0, 1.0], 2.0) == 0.2  # no words: no


def test_bad_sweeps_are_refused():
    for kw in ({"strengths": (float("nan"),)}, {"budget": 1.0}, {"n_prompts": 0}):
        with pytest.raises(EmosaeError):
            CalibrationConfig(**kw)


@pytest.mark.real
def test_small_sweep_on_the_real_model(real_model):
    from emosae.steering.directions import load_directions

    vec = load_directions()["happy"]
    cfg = CalibrationConfig(strengths=(-0.8, -0.4, 0.4, 0.8), n_prompts=2, max_new_tokens=12)
    cal = calibrate(vec, real_model, cfg=cfg)
    assert cal.strengths == [-0.8, -0.4, 0.0, 0.4, 0.8]
    i0 = cal.strengths.index(0.0)
    assert (
        cal.readout[i0] == 0.0
        and cal.ppl_ratio[i0] == 1.0
        and cal.kl[i0] == pytest.approx(0, abs=1e-6)
    )
    # the effect grows with the strength over the swept range (measured: strictly here)
    assert np.all(np.diff(cal.readout) > 0), cal.readout
    assert all(k >= 0 for k in cal.kl) and cal.kl[-1] > cal.kl[i0 + 1] > 0
    rec = cal.recommended
    assert rec is None or (rec > 0 and cal.ppl_ratio[cal.strengths.index(rec)] <= cfg.budget)
    assert set(cal.replies) == {str(s) for s in cal.strengths}
