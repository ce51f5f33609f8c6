"""Stage: run the behavioural experiments with the probe vectors of the SAE layer and
write `experiments/<name>.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from emosae.directions import load_directions
from emosae.experiments import Readout, generation, intensity, preferences, pressure, scenarios


def run_experiments(dirs: dict[str, Path], cfg: Any, model: Any) -> list[Path]:
    out = dirs["experiments"]
    out.mkdir(parents=True, exist_ok=True)
    vmeta = json.loads((dirs["probes"] / "vectors.json").read_text())
    layer = cfg.layer
    vecs = load_file(str(dirs["probes"] / "vectors.safetensors"))[f"diffmean.L{layer}"]
    ro = Readout(model, f"blocks.{layer}.hook_resid_post", vecs, vmeta["emotions"])
    probe_vecs = load_directions(dirs["probes"], kind="probe", layer=layer)
    sae_vecs = load_directions(
        dirs["labels"], kind="sae", sae_dir=dirs["train"], probe_dir=dirs["probes"]
    )
    written = []
    runs = {
        "scenarios": lambda: scenarios(ro),
        "intensity": lambda: intensity(ro),
        "preferences": lambda: preferences(
            ro,
            {
                f"{k}:{e}": v
                for k, src in (("probe", probe_vecs), ("sae", sae_vecs))
                for e, v in src.items()
                if e in ("blissful", "hostile")
            },
            cfg.experiments,
        ),
        "generation": lambda: generation(ro, probe_vecs, cfg.experiments),
        "pressure": lambda: pressure(ro, probe_vecs, cfg.experiments),
    }
    for name, fn in runs.items():
        if name in cfg.skip_experiments:
            continue
        print(f"  experiment {name}", flush=True)
        res: dict[str, Any] = fn()
        p = out / f"{name}.json"
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=float))
        os.replace(tmp, p)
        written.append(p)
    return written
