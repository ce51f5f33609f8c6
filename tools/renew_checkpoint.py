"""Replace the shipped checkpoint's labels and/or calibration with files made on a copy:
`python tools/renew_checkpoint.py CHECKPOINT [--labels labels.json] [--calibration A.json B.json ...]`
(how they were made for 0.3: benchmarks/results/remake_checkpoint.md)."""

import argparse
import sys

from emosae.pipeline.ship import renew

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("--labels")
p.add_argument("--calibration", nargs="+", default=[], help="merged concept by concept")
a = p.parse_args()
print(renew(a.checkpoint, " ".join(sys.argv), labels=a.labels, calibrations=a.calibration))
