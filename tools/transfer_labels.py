"""Score a checkpoint copy's (or run's) labels on the outside corpus and rewrite its
labels.json with labels that transfer (`emosae.validation.run.transfer_run_labels`):
`python tools/transfer_labels.py FOLDER [--corpus F] [--permutations 20]`. For the shipped
checkpoint run it on a copy, then `tools/renew_checkpoint.py` (benchmarks/results/
remake_checkpoint.md)."""

import argparse

from emosae.lm.models import load_model
from emosae.validation.run import transfer_run_labels

p = argparse.ArgumentParser()
p.add_argument("folder")
p.add_argument("--corpus", default=None)
p.add_argument("--permutations", type=int, default=20)
a = p.parse_args()
print(transfer_run_labels(load_model(), a.folder, a.corpus, a.permutations))
