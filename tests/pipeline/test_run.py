"""End to end: `emosae run --preset smoke` on the real default model, outputs load back,
and a rerun (a killed run, a corrupted output) recomputes only what is needed."""

import json
import logging
import os
import subprocess
import sys

import pytest

from emosae.core.errors import EmosaeError
from emosae.pipeline.config import preset
from emosae.pipeline.runner import run_pipeline

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "emosae.cli", "run", "--preset", "smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def test_smoke_outputs_load_back(smoke_run):
    from sae_lens import SAE

    from emosae.steering.directions import load_directions

    out, stdout = smoke_run
    assert "Headline numbers" in stdout and "report/index.html" in stdout
    sae = SAE.load_from_disk(str(out / "sae"))
    assert sae.cfg.d_in == 576
    probe = load_directions(out, kind="probe")
    feats = load_directions(out, kind="sae")
    assert len(probe) == 48 and set(feats) == set(probe)
    v = probe["happy"]
    assert v.hook_name == "blocks.15.hook_resid_post" and abs(v.direction.norm().item() - 1) < 1e-5
    assert feats["happy"].source.startswith("sae:feature")
    for f in (
        "labels/labels.json",
        "compare/compare.json",
        "experiments/scenarios.json",
        "report/index.html",
        "report/probe_accuracy_by_layer.png",
    ):
        assert (out / f).exists(), f
    head = json.loads((out / "report" / "headline.json").read_text())
    assert any("valence" in r["what"] for r in head)


def test_rerun_skips_finished_stages_and_repairs_corruption(smoke_run, caplog, real_model):
    out, _ = smoke_run
    cfg = preset("smoke", out=str(out))
    sae_mtime = (out / "sae" / "sae_weights.safetensors").stat().st_mtime_ns
    # a run killed after `compare`: the later stages never recorded completion
    stages = json.loads((out / "stages.json").read_text())
    for s in ("experiments", "report"):
        stages.pop(s)
    (out / "stages.json").write_text(json.dumps(stages))
    # and a corrupted output of a finished stage
    lab = out / "labels" / "labels.json"
    lab.write_text(lab.read_text()[:-50])
    caplog.set_level(logging.INFO, logger="emosae")
    run_pipeline(cfg, only=("cache", "train", "probes", "labels", "compare"), model=real_model)
    printed = caplog.text
    for s in ("cache", "train", "probes"):
        assert f"{s}: up to date, skipped" in printed
    assert "labels: output labels/labels.json is corrupted" in printed
    assert json.loads(lab.read_text())["counts"]  # rebuilt, valid JSON
    assert "compare: up to date, skipped" in printed  # labels came out identical
    assert (out / "sae" / "sae_weights.safetensors").stat().st_mtime_ns == sae_mtime


def test_unwritable_output_is_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EmosaeError, match="cannot write to output folder"):
        run_pipeline(preset("smoke", out=str(tmp_path / "file" / "run")))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "emosae.cli",
            "run",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "file" / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
