"""The steering headline of a run or checkpoint: `python analysis/steering_table.py
[FOLDER] [--kind probe|sae] [--plot FILE.png]` prints one row per calibrated vector and the counts
(default FOLDER: the shipped checkpoint); then, for the vectors whose held-out report was
judged, the judged table: VADER, NRC, Warriner valence and the own readout (not
independent), each as shift at +r against 0 and success rate."""

import argparse
import json

from emosae.core.layout import RunLayout, shipped_checkpoint
from emosae.experiments.steering_summary import (
    headline,
    judged_headline,
    judged_markdown,
    markdown,
    summary_rows,
)
from emosae.steering.directions import calibrations

p = argparse.ArgumentParser()
p.add_argument("folder", nargs="?", default=None)
p.add_argument("--kind", default="probe", choices=["probe", "sae"])
p.add_argument("--plot", default=None, help="also save the summary plot here (.png)")
a = p.parse_args()
cal = calibrations(RunLayout(a.folder or shipped_checkpoint()))
rows = summary_rows(cal, a.kind)
print(markdown(rows))
print(json.dumps(headline(rows), indent=1))
if any(r["judged"] for r in rows):
    print()
    print(judged_markdown(rows))
    print(json.dumps(judged_headline(rows), indent=1))
else:
    print("\n(no judged held-out reports in this calibration: made before the judges)")
if a.plot:
    from emosae.pipeline.plots import steering_summary_figure

    steering_summary_figure(cal, a.kind).savefig(a.plot, dpi=130)
