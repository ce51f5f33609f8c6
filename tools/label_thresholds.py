"""The label rule's threshold grid on a run's SAE, as the labeller chooses from it
(`emosae.features.labels.choose_rule`): per grid point, labelled features, concepts
with a concept label, expected false labels and estimated FDR; the chosen point starred.
`python tools/label_thresholds.py RUN_DIR [LabelConfig flags, e.g. --fdr_q 0.1]`
(output of the shipped run: benchmarks/results/label_thresholds_ship.log)."""

import simple_parsing as sp

from emosae.core import io
from emosae.core.layout import RunLayout
from emosae.features.fdr import choose_rule
from emosae.features.labels import LabelConfig
from emosae.features.style import StyleCovariates
from emosae.probes.vectors import load_story_acts

p = sp.ArgumentParser(add_config_path_arg=False)
p.add_argument("run")
p.add_arguments(LabelConfig, dest="cfg")
args = p.parse_args()
L = RunLayout(args.run)
lab = load_story_acts(L.probes).labels
sc = io.load_tensors(L.labels.scores)
style = None
if "style_covariates" in sc:
    style = StyleCovariates(sc["style_covariates"].double().numpy(), sc["story_topic"].numpy())
elif args.cfg.style_control:
    print(
        "no style covariates in scores.safetensors (labelled by an older emosae): no style control"
    )
choice = choose_rule(
    sc["story_feature_mean"].numpy(),
    lab.y.numpy(),
    lab.heldout.numpy(),
    len(lab.concepts),
    args.cfg,
    style,
)
t = choice.table
print(f"FDR target q={t['q']}, met: {t['met']}")
for g, r in enumerate(t["grid"]):
    chance = f", expected false {r['expected_false']:.2f}, FDR {r['fdr']:.3f}" if "fdr" in r else ""
    print(
        f"{'*' if g == t['chosen'] else ' '} held-out AUROC>={r['heldout_auroc']} "
        f"d'>={r['heldout_dprime']} train AUROC>={r['train_auroc']}: labelled features "
        f"{r['labelled_features']}, concepts with a concept label {r['concepts_labelled']}{chance}"
    )
