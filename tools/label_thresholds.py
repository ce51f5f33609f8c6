"""Labels and permutation false-discovery rate of a run's SAE under looser label rules:
`python tools/label_thresholds.py RUN_DIR` (output of the shipped run: benchmarks/results/label_thresholds_ship.log)."""

import sys

import numpy as np

from emosae.core import io
from emosae.core.layout import RunLayout
from emosae.features.labels import (
    LabelConfig,
    fdr_summary,
    label_rule,
    permutation_null,
    score_features,
    story_feature_acts,
)
from emosae.probes.vectors import load_story_acts
from emosae.sae.training import load_sae

L = RunLayout(sys.argv[1])
acts = load_story_acts(L.probes)
lab = acts.labels
t = acts.tensors
sc = io.load_tensors(L.labels.scores)
mean = sc["story_feature_mean"]
sae = load_sae(L.sae.dir)
_, freq = story_feature_acts(sae, t["story_token_acts"], t["story_token_lens"])
scores = score_features(mean, freq, lab.y, lab.heldout, len(lab.concepts))
for au, dp, tr in [
    (0.9, 1.0, 0.85),
    (0.85, 1.0, 0.8),
    (0.85, 0.8, 0.8),
    (0.8, 0.8, 0.8),
    (0.8, 0.6, 0.75),
    (0.75, 0.5, 0.7),
]:
    cfg = LabelConfig(min_auroc=au, min_dprime=dp, min_train_auroc=tr)
    p = label_rule(scores, cfg)
    single = [
        e
        for e in range(len(lab.concepts))
        if any(p[e, f] and p[:, f].sum() == 1 for f in np.nonzero(p[e])[0])
    ]
    null = permutation_null(mean, lab.y, lab.heldout, len(lab.concepts), cfg)
    s = fdr_summary(p, null, lab.concepts)
    print(
        f"heldout AUROC>={au} d'>={dp} train AUROC>={tr}: labelled features {s['observed_labelled_features']}, "
        f"concepts with a single-concept feature {len(single)}, expected false {s['expected_false_labels']:.2f} (max {s['expected_false_labels_max']}), FDR {s['fdr']:.3f}"
    )
