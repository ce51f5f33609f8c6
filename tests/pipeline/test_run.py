"""End to end: `emosae run --preset smoke` on the real default model, outputs load back,
and a rerun (a killed run, a corrupted output) recomputes only what is needed."""

import json
import logging
import subprocess
import sys

import pytest

from emosae.core.errors import EmosaeError
from emosae.pipeline.config import preset
from emosae.pipeline.runner import run_pipeline

pytestmark = pytest.mark.real


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


# One output of every stage to corrupt.
FAULTS = [
    ("cache", "activations/shard_00000.safetensors"),
    ("train", "sae/sae_weights.safetensors"),
    ("probes", "probes/vectors.safetensors"),
    ("labels", "labels/scores.safetensors"),
    ("compare", "compare/compare.json"),
    ("dashboard", "dashboard/neuronpedia.json"),
    ("experiments", "experiments/scenarios.json"),
    ("report", "report/headline.json"),
]


def test_fault_injection_recomputes_only_the_stage_that_made_the_file(
    smoke_run, caplog, real_model
):
    """For each stage, corrupt one of its outputs: the rerun names it, recomputes that
    stage alone (its outputs come out identical, so nothing downstream reruns) and ends
    with the same hashes as the clean run. (That the cache recomputes only a bad shard
    of several is tested in tests/test_reliability.py.)"""
    from emosae.pipeline.stages import STAGE_NAMES

    out, _ = smoke_run
    cfg = preset("smoke", out=str(out))
    stages = out / "stages.json"
    clean = {s: r["outputs"] for s, r in json.loads(stages.read_text()).items()}
    caplog.set_level(logging.INFO, logger="emosae")
    for stage, rel in FAULTS:
        b = bytearray((out / rel).read_bytes())
        b[len(b) // 2] ^= 0x20
        (out / rel).write_bytes(bytes(b))
        caplog.clear()
        run_pipeline(cfg, model=real_model)
        assert f"{stage}: output {rel} is corrupted" in caplog.text
        ran = {s for s in STAGE_NAMES if f"] {s}: done in" in caplog.text}
        assert ran == {stage}, (rel, ran)
        now = {s: r["outputs"] for s, r in json.loads(stages.read_text()).items()}
        assert now == clean, rel


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


def test_run_on_own_concept_set_reuses_cache_and_sae(smoke_run, caplog, real_model, tmp_path):
    """`emosae run --concepts DIR` on a finished run: the cache and SAE do not depend on
    the concepts and are kept; every concept-level stage redoes itself on the new set,
    and experiments needing absent emotions say why they are skipped."""
    import shutil
    from pathlib import Path

    from emosae.steering.directions import load_directions

    example = Path(__file__).parents[2] / "examples" / "social_concepts"
    names = ["deception", "urgency", "generosity", "competition", "teaching"]
    out, _ = smoke_run
    mine = tmp_path / "mine"
    shutil.copytree(out, mine)
    caplog.set_level(logging.INFO, logger="emosae")
    head = run_pipeline(preset("smoke", out=str(mine), concepts=str(example)), model=real_model)
    printed = caplog.text
    assert "cache: up to date, skipped" in printed and "train: up to date, skipped" in printed
    labels = json.loads((mine / "labels" / "labels.json").read_text())
    assert labels["concepts"] == names and labels["concept_set"]["name"] == "social_concepts"
    assert set(labels["best_per_concept"]) == set(names)
    assert set(load_directions(mine)) == set(names) == set(load_directions(mine, kind="sae"))
    assert "no texts of these concepts" in (mine / "validation" / "validation.md").read_text()
    for name in ("scenarios", "intensity", "preferences", "generation", "pressure"):
        assert "skipped" in json.loads((mine / "experiments" / f"{name}.json").read_text())
        assert f"experiment {name} skipped: needs at least" in printed
    traces = json.loads((mine / "experiments" / "traces.json").read_text())
    assert set(traces) == {"tylenol", "good_news", "lost_luggage"}
    assert traces["tylenol"]["concepts"] == names
    assert (mine / "report" / "trace_tylenol.html").exists()
    assert "calibrate probe: happy not in the concept set, skipped" in printed
    assert not any("valence" in r["what"] for r in head["rows"])  # no norms: no geometry


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
