#!/usr/bin/env bash
# CUDA check of the torchrun paths on a one-GPU machine that cannot reach the hub or
# PyPI. It needs, beside the repository:
#   .whl/  wheels of sae-lens, transformer-lens, wandb, simple-parsing, gguf and their
#          dependencies for the machine's Python (torch, transformers come with it)
#   .gpu/  meta.json and tokenizer/ of a converted SmolLM2 (from ~/.cache/emosae/models/
#          smollm2-135m-instruct): the weights (683 MB) do not travel, so the model is
#          SmolLM2's exact architecture with *random* weights. That is enough for what is
#          checked here (devices, backends, equality across launches), not for results.
# Checks, each against a plain one-process CUDA run of the same config:
#   torchrun --nproc_per_node=1 (nccl), and 2 ranks sharing the GPU (gloo; nccl refuses
#   two ranks on one GPU): caching equal shard for shard; data-parallel training with a
#   weight check after every step, equal to one process within float tolerance.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_DISABLE=1
export EMOSAE_CACHE=/tmp/emosae_cache PYTHONUNBUFFERED=1
nvidia-smi -L
python3 - <<'EOF'
import json, shutil
from pathlib import Path
import torch
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from emosae.core.io import sha256_file
meta = json.loads(Path(".gpu/meta.json").read_text())
cfg = dict(meta["cfg"]); cfg["dtype"] = torch.float32; cfg["device"] = "cpu"
known = set(HookedTransformerConfig.__dataclass_fields__)
torch.manual_seed(0)
m = HookedTransformer(HookedTransformerConfig(**{k: v for k, v in cfg.items() if k in known}))
dst = Path("/tmp/emosae_cache/models/smollm2-135m-instruct"); dst.mkdir(parents=True)
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(dst / "model.safetensors"))
shutil.copytree(".gpu/tokenizer", dst / "tokenizer")
meta["sha256"] = sha256_file(dst / "model.safetensors")
(dst / "meta.json").write_text(json.dumps(meta))
print("random-weight SmolLM2 written", torch.__version__, torch.cuda.get_device_name())
EOF
C="--device cuda --layers 15 --max_tokens ${TOKENS:-262144} --context_len 128 --contexts_per_shard 128 --batch_size 64 --dtype float32"
T="--device cuda --architecture topk --d_sae 4608 --k 32 --batch_size 4096 --epochs 2 --eval_contexts 16"
run() { local t0=$SECONDS; "$@" 2>&1 | grep -E "error|Error|written|EV " || true; echo "  [$((SECONDS - t0)) s] $*" | cut -c1-160; }
run python3 -m emosae cache --out /tmp/c_one $C
run torchrun --standalone --nproc_per_node=1 -m emosae cache --out /tmp/c_nccl $C
EMOSAE_DIST_BACKEND=gloo run torchrun --standalone --nproc_per_node=2 -m emosae cache --out /tmp/c_gloo2 $C
run python3 -m emosae train --cache /tmp/c_one --out /tmp/t_one $T
run torchrun --standalone --nproc_per_node=1 -m emosae train --cache /tmp/c_one --out /tmp/t_nccl $T --parallel data --sync_check_every 1
EMOSAE_DIST_BACKEND=gloo run torchrun --standalone --nproc_per_node=2 -m emosae train --cache /tmp/c_one --out /tmp/t_gloo2 $T --parallel data --sync_check_every 1
# the same two launches stopped after 1 and 12 steps (epochs 0.02 and 0.2)
for e in 0.02 0.2; do
  S="${T/--epochs 2/--epochs $e} --eval_contexts 0"
  run python3 -m emosae train --cache /tmp/c_one --out /tmp/t_one_$e $S
  EMOSAE_DIST_BACKEND=gloo run torchrun --standalone --nproc_per_node=2 -m emosae train --cache /tmp/c_one --out /tmp/t_gloo2_$e $S --parallel data --sync_check_every 1
done
python3 - <<'EOF'
import json
from pathlib import Path
from safetensors.torch import load_file
from emosae.sae.reader import ActivationCache
one = json.loads(Path("/tmp/c_one/manifest.json").read_text())
ref = ActivationCache.open("/tmp/c_one").rows("blocks.15.hook_resid_post")
for name in ("c_nccl", "c_gloo2"):
    m = json.loads(Path(f"/tmp/{name}/manifest.json").read_text())
    same = [a["sha256"] == b["sha256"] for a, b in zip(one["shards"], m["shards"])]
    x = ActivationCache.open(f"/tmp/{name}").rows("blocks.15.hook_resid_post")
    print(f"{name}: {m['n_rows']} rows, ranks {sorted({s['rank'] for s in m['shards']})}, "
          f"shards identical {sum(same)}/{len(same)}, max |diff| {(x - ref).abs().max().item():.3g}")
for one, name in [("t_one", "t_nccl"), ("t_one", "t_gloo2"), ("t_one_0.02", "t_gloo2_0.02"),
                  ("t_one_0.2", "t_gloo2_0.2")]:
    a = load_file(f"/tmp/{one}/sae_weights.safetensors")
    b = load_file(f"/tmp/{name}/sae_weights.safetensors")
    p = json.loads(Path(f"/tmp/{name}/emosae.json").read_text())["parallel"]
    diff = {k: f"{(a[k] - b[k]).abs().max().item():.2g}/{a[k].abs().max().item():.2g}" for k in a}
    print(f"{name}: {p}, max |diff| / max |w| vs one process {diff}")
for name in ("t_one", "t_nccl", "t_gloo2"):
    m = json.loads(Path(f"/tmp/{name}/metrics.json").read_text())
    print(name, {k: round(m[k], 4) for k in ("explained_variance", "l0", "ce_loss_recovered")})
EOF
