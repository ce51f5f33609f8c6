"""Feature scores and labels by story contrast, checked against scipy and by hand."""

import numpy as np
import pytest
from scipy import stats

from emosae.features.labels import LabelConfig, assign_labels, auroc_matrix, dprime_matrix


def test_auroc_and_dprime_against_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = np.repeat(np.arange(4), 10)
    x[y == 2, 3] += 3
    au = auroc_matrix(x, y, 4)
    for e in range(4):
        for f in range(5):
            pos, neg = x[y == e, f], x[y != e, f]
            u = stats.mannwhitneyu(pos, neg).statistic
            assert au[e, f] == pytest.approx(u / (len(pos) * len(neg)))
    assert au[2, 3] > 0.95
    d = dprime_matrix(x, y, 4)
    a, b = x[y == 2, 3], x[y != 2, 3]
    assert d[2, 3] == pytest.approx(
        (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2), rel=1e-6
    )


def test_labels_need_heldout_and_train():
    E, F = 3, 4
    z = np.zeros((E, F))
    s = {
        k: z.copy()
        for k in (
            "train_auroc",
            "heldout_auroc",
            "train_dprime",
            "heldout_dprime",
            "train_freq_in",
            "train_freq_out",
            "heldout_freq_in",
            "heldout_freq_out",
        )
    }
    s["train_auroc"][0, 1] = s["heldout_auroc"][0, 1] = 0.95
    s["heldout_dprime"][0, 1] = 2.0
    s["train_auroc"][1, 2] = 0.99  # fails on held-out topics
    s["heldout_auroc"][1, 3] = s["heldout_auroc"][2, 3] = s["train_auroc"][1, 3] = s["train_auroc"][
        2, 3
    ] = 0.97
    s["heldout_dprime"][1, 3] = s["heldout_dprime"][2, 3] = 1.5
    r = assign_labels(s, ["a", "b", "c"], ["X", "Y", "Y"], LabelConfig())
    assert r["features"][1]["label"] == "a" and r["features"][1]["kind"] == "concept"
    assert 2 not in r["features"]
    assert r["features"][3]["kind"] == "cluster" and r["features"][3]["label"] == "Y"
    assert r["counts"] == {"concept": 1, "cluster": 1, "ambiguous": 0, "unlabelled": 2}
    assert r["best_per_concept"]["b"]["feature"] == 2 and not r["best_per_concept"]["b"]["passes"]


def _stories(seed=0, S=240, E=8, F=300):
    import torch

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(E), S // E)
    held = np.tile(np.arange(S // E) % 3 == 0, E)  # a third of each concept held out
    x = rng.gamma(1.0, 1.0, size=(S, F))
    x[:, 0] += 4.0 * (y == 0)  # one feature truly tracks concept 0
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(held), E


def test_permutation_null_separates_a_planted_feature_from_noise():
    from emosae.features.labels import fdr_summary, label_rule, permutation_null, score_features

    x, y, held, E = _stories()
    names = [f"c{e}" for e in range(E)]

    def fdr(cfg):
        sc = score_features(x, (x > 1).float(), y, held, E)
        null = permutation_null(x, y, held, E, cfg)
        assert null["per_concept"].shape == (cfg.permutations, E)
        return fdr_summary(label_rule(sc, cfg), null, names), null

    strict, null = fdr(LabelConfig(permutations=20))
    assert strict["per_concept"]["c0"]["observed"] == 1  # the planted feature, alone
    assert strict["observed_labelled_features"] == 1 and strict["fdr"] <= 0.1
    again = permutation_null(x, y, held, E, LabelConfig(permutations=20))
    assert np.array_equal(again["labelled_features"], null["labelled_features"])  # seeded
    # a loose rule labels noise: about as many labels as the shuffles produce
    loose, lnull = fdr(
        LabelConfig(permutations=20, min_auroc=0.6, min_dprime=0.2, min_train_auroc=0.55)
    )
    assert loose["observed_labelled_features"] > 20 and loose["fdr"] > 0.5
    assert loose["expected_false_labels"] == lnull["labelled_features"].mean()
