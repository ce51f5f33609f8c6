#!/bin/bash
# Issue 21, item 4: which SAE settings reach the field's bar (EV >= 0.8, L0 <= 64,
# dead < 10%, CE recovered >= 0.95 on held-out tokens) on the default preset's cache
# (300k tokens, layer 15) within the default run's time. One cache, then one
# `emosae train` per setting; every metrics.json is printed at the end.
# Usage: bash benchmarks/sae_default_sweep.sh [WORKDIR]   (2 CPU cores: ~25 min)
set -e
W=${1:-/tmp/sae_sweep}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
mkdir -p "$W"
t0=$(date +%s)
emosae cache --out "$W/activations" --max_tokens 300000
echo "cache: $(( $(date +%s) - t0 )) s"
train() {  # name, then flags
  local n=$1; shift
  local t=$(date +%s)
  [ -f "$W/$n/metrics.json" ] || emosae train --cache "$W/activations" --out "$W/$n" --d_sae 3072 --k 64 "$@"
  echo "$n: $(( $(date +%s) - t )) s  ($*)"
}
train batchtopk_default --architecture batchtopk
train topk_b1024 --architecture topk
train topk_b256 --architecture topk --batch_size 256
train batchtopk_b256 --architecture batchtopk --batch_size 256
train topk_b256_lr8e-4 --architecture topk --batch_size 256 --lr 8e-4
python - "$W" <<'PY'
import json, sys, pathlib
print("| setting | EV | L0 | dead % | CE recovered |")
print("|---|---|---|---|---|")
for m in sorted(pathlib.Path(sys.argv[1]).glob("*/metrics.json")):
    d = json.loads(m.read_text())  # emosae.sae.metrics' keys
    print(f"| {m.parent.name} | {d['explained_variance']:.3f} | {d['l0']:.1f} | "
          f"{100 * d['dead_fraction']:.1f} | {d['ce_loss_recovered']:.3f} |")
PY
