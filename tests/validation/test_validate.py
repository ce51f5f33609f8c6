"""`emosae validate` and labels that transfer: the statistics against hand counts, the
re-pick rule on a hand-made labels.json, bad corpora refused before any model loads, and
on the real model a validation folder and a checkpoint copy whose best features transfer."""

import json
import shutil

import numpy as np
import pytest

import emosae
from emosae.cli.main import main
from emosae.core.layout import shipped_checkpoint
from emosae.data.outside import DEFAULT_PATH
from emosae.validation import measures as M
from emosae.validation.transfer import transfer_labels, untransfer


def test_auroc_counts_pairs_and_ties():
    s = np.array([3.0, 1.0, 2.0, 2.0])
    pos = np.array([True, False, True, False])
    # pairs (pos, neg): (3,1) (3,2) (2,1) (2,2): 3 wins + 1 tie = 3.5 of 4
    assert M.auroc(s, pos) == 3.5 / 4
    assert np.isnan(M.auroc(s, np.ones(4, bool)))
    y = np.array([0, 1, 0, 1, 2, 2])
    x = np.random.default_rng(0).normal(size=(6, 3))
    cF = np.array([0, 1, 2])
    want = [M.auroc(x[:, f], y == cF[f]) for f in range(3)]
    assert M.feature_aurocs(x, y, cF) == pytest.approx(want)
    member = np.zeros((3, 3), bool)
    member[[0, 1, 2, 1], [0, 1, 2, 2]] = True  # feature 2 stands for concepts 1 and 2
    got = M.feature_aurocs(x, y, member)
    assert got[:2] == pytest.approx(want[:2]) and got[2] == M.auroc(x[:, 2], y >= 1)
    ci = M.feature_auroc_cis(x, y, cF, n_boot=50)
    assert ci[:, 0] == pytest.approx(want) and np.all(ci[:, 1] <= ci[:, 2])


def test_topk_and_valence_axis():
    s = np.array([[0.1, 0.9, 0.5], [0.8, 0.1, 0.2]])
    assert M.topk_hits(s, np.array([2, 2]), 1).tolist() == [False, False]
    assert M.topk_hits(s, np.array([2, 2]), 2).tolist() == [True, True]
    v = np.array([8.0, 2.0, np.nan])  # a positive, a negative, an unnormed concept
    # a text reading its own concept highest is placed on its side of the axis
    s = np.array([[2.0, 0, 0], [0, 2.0, 0], [1.5, 0, 9], [0, 1.0, 0]])
    y = np.array([0, 1, 0, 1])
    assert M.valence_auroc(s, y, v)[0] == 1.0
    assert M.valence_auroc(s[:, [1, 0, 2]], y, v)[0] == 0.0


def test_transfer_threshold_is_the_loosest_at_the_fdr():
    grid = np.array([0.5, 0.6, 0.7, 0.8])
    observed = np.array([0.55, 0.65, 0.75, 0.85, 0.9])
    null = np.array([4.0, 1.0, 0.1, 0.0])  # chance passes at each threshold
    # observed counts 5, 4, 3, 2 -> FDR 0.8, 0.25, 0.033, 0
    ch = M.transfer_threshold(observed, null, grid, q=0.05)
    assert ch["threshold"] == 0.7 and ch["observed"] == 3 and ch["met"]
    assert not M.transfer_threshold(observed, null + 5, grid, q=0.05)["met"]


def _feat(f, label, train, kind="concept"):
    keys = {k: 0.8 for k in ("train_dprime", "heldout_auroc", "heldout_dprime")}
    return {"feature": f, "kind": kind, "label": label, "concepts": [label], "train_auroc": train,
            "heldout_rank": 1, **keys}  # fmt: skip


def test_a_label_that_fails_the_corpus_is_not_a_best_feature():
    labels = {
        "counts": {"concept": 3},
        "concepts_with_label": ["a", "b"],
        "features": {
            "1": _feat(1, "a", 0.95),
            "2": _feat(2, "a", 0.8),
            "3": _feat(3, "b", 0.9),
            "4": {**_feat(4, "ab", 0.9, kind="cluster"), "concepts": ["a", "b"]},
        },
        "best_per_concept": {
            "a": {"feature": 1, "kind": "concept", "passes": True, "train_auroc": 0.95},
            "b": {"feature": 3, "kind": "concept", "passes": True, "train_auroc": 0.9},
            "c": {"feature": 9, "kind": "unlabelled", "passes": False, "train_auroc": 0.6},
        },
    }
    rows = [  # feature 1 fails the corpus, 2 and 3 transfer
        {"feature": 1, "concept": "a", "outside_auroc": [0.4, 0.3, 0.5], "transfers": False},
        {"feature": 2, "concept": "a", "outside_auroc": [0.9, 0.8, 1.0], "transfers": True},
        {"feature": 3, "concept": "b", "outside_auroc": [0.8, 0.7, 0.9], "transfers": True},
        {"feature": 4, "concept": "a+b", "outside_auroc": [0.6, 0.5, 0.7], "transfers": False},
    ]
    scored = {"features": rows, "threshold": {"threshold": 0.7}}
    out = transfer_labels(labels, scored, {"corpus": "x"})
    best = out["best_per_concept"]
    assert best["a"]["feature"] == 2 and best["a"]["rule_feature"] == 1 and best["a"]["transfers"]
    assert best["b"]["feature"] == 3 and "rule_feature" not in best["b"]
    assert best["c"]["feature"] == 9 and best["c"]["transfers"] is False
    # a concept label that fails the corpus is no longer one
    f1 = out["features"]["1"]
    assert f1["transfers"] is False and f1["kind"] == "corpus-specific"
    assert f1["label"] == "corpus-specific: a" and out["features"]["2"]["kind"] == "concept"
    assert out["counts"] == {"concept": 2, "corpus-specific": 1}
    f4 = out["features"]["4"]  # a shared label carries its figure but keeps its kind
    assert f4["kind"] == "cluster" and f4["outside_auroc"][0] == 0.6 and not f4["transfers"]
    assert out["transfer"]["shared_labels"] == 1 and out["transfer"]["shared_transfer"] == 0
    assert out["concepts_with_label"] == ["a", "b"]
    assert out["transfer"]["corpus_specific"] == [1] and out["transfer"]["repicked"] == ["a"]
    assert labels["best_per_concept"]["a"]["feature"] == 1  # the input is not changed
    # checked again (another corpus): from the rule's labels, not from the checked ones
    assert untransfer(out) == labels
    assert transfer_labels(out, scored, {"corpus": "x"}) == out


@pytest.mark.parametrize(
    "line, match",
    [
        ({"concept": "joyful_x", "register": "post", "text": "A fine day."}, ":2: unknown concept"),
        ({"concept": "sad", "register": "post", "text": "I feel so sad."}, ":2: text of 'sad'"),
        ({"concept": "sad", "register": "post", "text": "  "}, ":2: empty text"),
    ],
)
def test_bad_corpus_is_one_line_before_the_model_loads(tmp_path, capsys, no_model, line, match):
    good = {"concept": "calm", "register": "diary", "text": "Tea on the porch, nothing to do."}
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    rc = main(["validate", "--out", str(tmp_path / "v"), "--corpus", str(src)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{src}{match}" in err[0], err
    assert not (tmp_path / "v").exists()


def _subset(tmp_path, concepts):
    rows = [json.loads(x) for x in DEFAULT_PATH.read_text().splitlines()]
    src = tmp_path / "sub.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows if r["concept"] in concepts))
    return src


@pytest.mark.real
def test_validate_writes_figures_with_intervals(tmp_path, capsys, real_model):
    src = _subset(tmp_path, {"afraid", "happy", "sad", "calm", "angry", "grateful"})
    out = tmp_path / "v"
    argv = ["validate", "--out", str(out), "--corpus", str(src), "--bundled", "false"]
    assert main([*argv, "--permutations", "2"]) == 0
    assert "top-1 over concepts" in capsys.readouterr().out
    res = json.loads((out / "validation.json").read_text())
    o = res["outside"]
    assert o["n_texts"] == 66 and o["chance_top1"] == pytest.approx(1 / 48, abs=1e-6)
    for key in ("top1", "top3", "valence_auroc"):
        v, lo, hi = o[key]
        assert lo <= v <= hi, key
    assert o["valence_auroc"][0] > 0.5  # happy/calm/grateful vs afraid/sad/angry
    lab = res["labels"]
    assert {r["concept"] for r in lab["features"]} >= {"afraid", "sad"}
    assert set(lab["best_per_concept"]) == {"afraid", "happy", "sad", "calm", "angry", "grateful"}
    assert "## SAE labels" in (out / "validation.md").read_text()


@pytest.mark.real
def test_checkpoint_copy_steers_with_features_that_transfer(tmp_path, real_model):
    from emosae.validation.run import transfer_run_labels

    ckpt = tmp_path / "ckpt"
    shutil.copytree(shipped_checkpoint(), ckpt)
    concepts = {"afraid", "sad", "calm", "angry", "disgusted", "lonely"}
    transfer_run_labels(real_model, ckpt, _subset(tmp_path, concepts), permutations=5)
    labels = json.loads((ckpt / "labels" / "labels.json").read_text())
    t = labels["transfer"]
    assert t["n_texts"] == 66 and 0.5 <= t["threshold"]["threshold"] < 1
    vecs = emosae.load_directions(ckpt, kind="sae")
    for c in concepts:
        b = labels["best_per_concept"][c]
        feats = [f for f in labels["features"].values() if f["label"] == c and "transfers" in f]
        if any(f["transfers"] for f in feats):  # a concept with a feature that transfers
            assert b["transfers"] and b["outside_auroc"][0] >= t["threshold"]["threshold"]
        assert vecs[c].source.startswith(f"sae:feature {b['feature']} ")
