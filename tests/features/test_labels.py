"""Feature scores and labels by story contrast, checked against scipy and by hand: the
rule's specificity, style control on a planted dialogue feature, the threshold choice
by false-discovery rate, and a null that runs the very same rule."""

import numpy as np
import pytest
import torch
from scipy import stats

from emosae.features.fdr import StoryContrast, choose_rule, permutation_null, shuffle_within
from emosae.features.labels import LabelConfig, label_stories, upgrade_labels
from emosae.features.rule import (
    LABEL_KINDS,
    Thresholds,
    assign_labels,
    auroc_matrix,
    dprime_matrix,
    score_features,
)
from emosae.features.style import (
    StyleCovariates,
    centre_within,
    covariates_from_ids,
    is_punct,
    is_quote,
    residualise,
    story_covariates,
    story_topic,
)

FIXED = Thresholds(0.9, 1.0, 0.85)
KEYS = (
    "train_auroc",
    "heldout_auroc",
    "train_dprime",
    "heldout_dprime",
    "train_freq_in",
    "train_freq_out",
    "heldout_freq_in",
    "heldout_freq_out",
)


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


def _scores(E: int, F: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((E, F)) for k in KEYS}


def _passing(s, e, f, heldout=0.95):
    s["train_auroc"][e, f], s["heldout_auroc"][e, f], s["heldout_dprime"][e, f] = 0.95, heldout, 2.0


def test_labels_need_heldout_and_train():
    s = _scores(3, 4)
    _passing(s, 0, 1)
    s["train_auroc"][1, 2] = 0.99  # fails on held-out topics
    _passing(s, 1, 3, 0.97)
    _passing(s, 2, 3, 0.97)
    r = assign_labels(s, ["a", "b", "c"], ["X", "Y", "Y"], FIXED, 0.05)
    assert r["features"][1]["label"] == "a" and r["features"][1]["kind"] == "concept"
    assert 2 not in r["features"]
    assert r["features"][3]["kind"] == "cluster" and r["features"][3]["label"] == "Y"
    assert r["counts"] == {
        "concept": 1,
        "cluster": 1,
        "ambiguous": 0,
        "unspecific": 0,
        "style": 0,
        "unlabelled": 2,
    }
    # b and c have no label of their own: both steer with feature 3, whose cluster label
    # holds them, over b's unlabelled feature 2 with the higher training AUROC
    b, c = r["best_per_concept"]["b"], r["best_per_concept"]["c"]
    assert (b["feature"], b["kind"], b["passes"]) == (3, "shared", False)
    assert (c["feature"], c["kind"]) == (3, "shared")
    assert r["best_per_concept"]["a"]["passes"] and r["concepts_with_label"] == ["a"]
    assert r["best_per_concept"]["a"]["kind"] == "concept"


def test_a_concept_label_must_be_the_heldout_best_by_the_margin():
    s = _scores(3, 4)
    for f in range(3):
        _passing(s, 0, f)  # every feature passes for a alone...
    s["heldout_auroc"][1, 0] = 0.97  # ...but b beats a on held-out stories (fails train)
    s["heldout_auroc"][1, 1] = 0.92  # a leads b by 0.03 < 0.05
    s["heldout_auroc"][1, 2] = 0.85  # a leads b by 0.10
    s["heldout_auroc"][2, :3] = 0.6
    s["train_auroc"][1, 3], s["heldout_auroc"][:, 3] = 0.99, [0.7, 0.5, 0.6]
    r = assign_labels(s, ["a", "b", "c"], ["X", "Y", "Z"], FIXED, 0.05)
    f0, f1, f2 = (r["features"][f] for f in range(3))
    assert [f0["kind"], f1["kind"], f2["kind"]] == ["unspecific", "unspecific", "concept"]
    assert f0["label"] == "unspecific: a" and f2["label"] == "a"
    assert (f0["heldout_rank"], f1["heldout_rank"], f2["heldout_rank"]) == (2, 1, 1)
    assert f0["runner_up"] == f1["runner_up"] == f2["runner_up"] == "b"
    assert f0["runner_up_auroc"] == 0.97 and f2["runner_up_auroc"] == 0.85
    assert f0["margin"] == pytest.approx(-0.02) and f1["margin"] == pytest.approx(0.03)
    assert f2["margin"] == pytest.approx(0.10)
    assert r["counts"]["concept"] == 1 and r["counts"]["unspecific"] == 2
    assert r["best_per_concept"]["b"] == {**r["best_per_concept"]["b"], "feature": 3}
    assert r["best_per_concept"]["b"]["heldout_rank"] == 3  # 0.5 < 0.6 < 0.7
    old = assign_labels(s, ["a", "b", "c"], ["X", "Y", "Z"], FIXED, -1)
    assert [old["features"][f]["kind"] for f in range(3)] == ["concept"] * 3  # emosae 0.2


def test_quote_and_punctuation_tokens():
    assert is_quote(' "') and is_quote("“") and is_quote("”,") and is_quote(" 'Hi")
    assert not is_quote("'s") and not is_quote("n't") and not is_quote("’") and not is_quote(" x")
    assert is_punct("!") and is_punct(" –") and is_punct("?\n") and not is_punct(" word")
    assert story_topic("afraid/cooking", "afraid") == "cooking"
    assert story_topic("afraid/cooking#2", "afraid") == "cooking"
    assert story_topic("afraid/a#b", "afraid") == "a#b" and story_topic("x/y", "z") == ""


def test_covariates_by_hand_and_from_ids():
    toks = [" He", " said", ' "', "Hi", "!", '"', " I", "'m", " fine", "."]
    cov = story_covariates(toks, [6, 4], ["t1", "t0"])
    assert cov.z_SK[:, 0] == pytest.approx(np.log([6, 4]))
    assert cov.z_SK[:, 1] == pytest.approx([2 / 6, 0])  # "'m" is no quote
    assert cov.z_SK[:, 2] == pytest.approx([1 / 6, 1 / 4])
    assert cov.topic_S.tolist() == [1, 0]
    vocab = sorted(set(toks))
    ids = [vocab.index(t) for t in toks]
    again = covariates_from_ids(ids, [6, 4], ["t1", "t0"], lambda i: vocab[i[0]])
    assert np.array_equal(again.z_SK, cov.z_SK)


def _dialogue_stories(seed=0, E=6, topics=12, per=2, F=12):
    """Stories on `topics` topics (a third held out), `per` per concept and topic;
    concept 0's writers use five times as much dialogue. Feature 0 is the quote density
    plus noise; feature 1 indicates concept 2; the rest is noise."""
    rng = np.random.default_rng(seed)
    rows = [(e, t) for t in range(topics) for e in range(E) for _ in range(per)]
    y = np.array([e for e, _ in rows])
    held = np.array([t < topics // 3 for _, t in rows])
    toks, lens = [], []
    for e, _ in rows:
        n, pq = int(rng.integers(30, 80)), 0.25 if e == 0 else 0.05
        toks += [(' "', ",", " the")[k] for k in rng.choice(3, size=n, p=[pq, 0.15, 0.85 - pq])]
        lens.append(n)
    cov = story_covariates(toks, lens, [f"topic{t}" for _, t in rows])
    x = rng.gamma(1.0, 0.2, size=(len(rows), F))
    x[:, 0] = cov.z_SK[:, 1] + rng.normal(0, 0.01, len(rows))
    x[:, 1] = (y == 2) + rng.normal(0, 0.2, len(rows))
    t = torch.tensor
    return t(x, dtype=torch.float32), t(y), t(held), cov, [f"c{e}" for e in range(E)]


def test_residuals_are_centred_in_topics_and_orthogonal_to_covariates():
    x, _, held, cov, _ = _dialogue_stories()
    res = residualise(x.numpy(), cov, ~held.numpy())
    assert np.abs(centre_within(res, cov.topic_S) - res).max() < 1e-9
    z = centre_within(cov.z_SK, cov.topic_S)[~held.numpy()]
    assert np.abs(z.T @ res[~held.numpy()]).max() < 1e-9
    assert np.abs(res[:, 0]).max() < 0.05  # the quote feature is all covariate


def test_a_planted_quote_feature_is_style_and_a_concept_feature_keeps_its_label():
    x, y, held, cov, names = _dialogue_stories()
    freq = (x > 0.5).float()

    def run(**kw):
        cfg = LabelConfig(**{"fdr_q": 0, "permutations": 0, **kw})
        return label_stories(x, freq, y, held, names, names, cfg, cov)[0]

    raw = run(style_control=False)
    assert raw["features"][0]["kind"] == "concept" and raw["features"][0]["label"] == "c0"
    r = run()
    quote, genuine = r["features"][0], r["features"][1]
    assert quote["kind"] == "style" and quote["label"] == "style: c0"
    assert quote["style_covariate"] == "quotes" and quote["style_r2"] > 0.9
    assert quote["heldout_auroc"] > 0.95 and quote["style_auroc"] < 0.7
    assert genuine["kind"] == "concept" and genuine["label"] == "c2"
    assert genuine["style_auroc"] > 0.95
    assert r["counts"]["style"] == 1 and r["counts"]["concept"] == 1
    assert r["concepts_with_label"] == ["c2"] and not r["best_per_concept"]["c0"]["passes"]
    chosen = run(fdr_q=0.05, permutations=20)  # the choice keeps style control
    assert chosen["features"][0]["kind"] == "style" and chosen["counts"]["style"] == 1


def _stories(seed=0, per=12, E=8, F=400, shift=0.0):
    """Gamma noise; with `shift`, feature e is raised by it in concept e's stories."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(E), per)
    held = np.tile(np.arange(per) % 3 == 0, E)  # a third of each concept held out
    x = rng.gamma(1.0, 1.0, size=(per * E, F))
    x[np.arange(per * E), y] += shift
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(held), E


def _choose(x, y, held, E, **kw):
    return choose_rule(x.numpy(), y.numpy(), held.numpy(), E, LabelConfig(**kw))


def test_fdr_choice_loosens_for_strong_signal_and_stays_strict_on_noise():
    cfg = LabelConfig()
    t = _choose(*_stories(shift=3.0)).table
    grid, chosen = t["grid"], t["grid"][t["chosen"]]
    assert grid[0] == {**grid[0], **Thresholds(0.95, 1.5, 0.85)._asdict()}  # strictest
    assert len(grid) == 6 * 4 * 4 and t["q"] == cfg.fdr_q and t["met"]
    assert chosen["fdr"] <= cfg.fdr_q and chosen["concepts_labelled"] == 8
    assert grid[0]["concepts_labelled"] < 8 and chosen["heldout_auroc"] < 0.95
    assert grid[-1]["fdr"] > 0.3  # the loosest point labels noise: the choice stops short
    for row in grid:  # nothing looser labels more concepts within the FDR
        if row["fdr"] <= cfg.fdr_q:
            assert row["concepts_labelled"] <= chosen["concepts_labelled"]
    noise = _choose(*_stories()).table
    assert noise["grid"][-1]["labelled_features"] > 0 and noise["grid"][-1]["fdr"] > 0.5
    picked = noise["grid"][noise["chosen"]]
    assert picked["labelled_features"] == 0 and picked["fdr"] == 0.0 and noise["met"]


def test_labels_use_the_chosen_point_and_report_its_null():
    x, y, held, E = _stories(shift=3.0)
    names = [f"c{e}" for e in range(E)]
    r, _ = label_stories(x, (x > 1).float(), y, held, names, names, LabelConfig())
    row = r["threshold_choice"]["grid"][r["threshold_choice"]["chosen"]]
    assert r["thresholds"] == {
        **{k: row[k] for k in Thresholds._fields},
        "min_margin": 0.05,
        "style_control": False,  # no covariates given
    }
    c = r["counts"]
    assert c["concept"] + c["cluster"] + c["ambiguous"] == row["labelled_features"]
    assert r["null"]["fdr"] == row["fdr"] and r["null"]["permutations"] == 20
    assert r["null"]["expected_false_labels"] == row["expected_false"]
    assert len(r["concepts_with_label"]) == row["concepts_labelled"]
    fixed, _ = label_stories(x, (x > 1).float(), y, held, names, names, LabelConfig(fdr_q=0))
    assert fixed["threshold_choice"]["q"] is None and len(fixed["threshold_choice"]["grid"]) == 1
    assert fixed["thresholds"]["heldout_auroc"] == 0.9 and "fdr" in fixed["null"]


def test_the_null_runs_the_same_rule_on_shuffled_labels():
    """Each shuffle's counts at every grid point equal `assign_labels` (margin and style
    control included) on scores computed from scratch under that shuffle."""
    x, y, held, E = _stories(per=9)
    x_np, y_np, held_np = x.numpy().astype(float), y.numpy(), held.numpy()
    S = len(y_np)
    cov = StyleCovariates(np.random.default_rng(7).normal(size=(S, 3)), np.arange(S) % 6)
    cfg = LabelConfig(seed=3)
    grid = cfg.grid()
    contrast = StoryContrast(x_np, held_np, E, cfg.min_margin, cov)
    null = permutation_null(contrast, y_np, grid, 2, cfg.seed)
    res = residualise(x_np, cov, ~held_np)
    shuffles = np.random.default_rng(cfg.seed)
    names, kinds = [f"c{e}" for e in range(E)], set()
    for p in range(2):
        yp = shuffle_within(y_np, held_np, shuffles)
        scores = score_features(x, (x > 1).float(), torch.tensor(yp), held, E)
        style = score_features(torch.tensor(res), torch.tensor(res), torch.tensor(yp), held, E)
        for g, th in enumerate(grid):
            r = assign_labels(scores, names, names, th, cfg.min_margin, style)
            kinds |= {v["kind"] for v in r["features"].values()}
            lab = [v for v in r["features"].values() if v["kind"] in LABEL_KINDS]
            assert null["labelled_features"][p, g] == len(lab)
            per = [sum(n in v["concepts"] for v in lab) for n in names]
            assert null["per_concept"][p, g].tolist() == per
    assert {"concept", "unspecific", "style"} <= kinds  # margin and style control mattered
    again = permutation_null(contrast, y_np, grid, 2, cfg.seed)
    assert np.array_equal(again["labelled_features"], null["labelled_features"])  # seeded


def test_old_labels_files_still_read():
    old = {
        "emotions_with_label": ["fear"],
        "counts": {"emotion": 1, "cluster": 0, "ambiguous": 0, "unlabelled": 3},
        "features": {"0": {"label": "fear", "kind": "emotion", "emotions": ["fear"]}},
    }
    new = upgrade_labels(old)
    assert new["concepts_with_label"] == ["fear"] and new["counts"]["concept"] == 1
    assert new["features"]["0"]["kind"] == "concept" and "threshold_choice" not in new
