"""Renewing a checkpoint's labels and calibration: merged, sealed, provenance kept."""

import shutil

import pytest

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout, shipped_checkpoint
from emosae.pipeline.ship import renew


def test_renew_merges_calibrations_and_seals_again(tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(shipped_checkpoint(), ck)
    L = RunLayout(ck)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json(a, {"probe": {"happy": {"recommended": 0.3}}, "config": {"n_prompts": 3}})
    io.write_json(b, {"probe": {"sad": {"recommended": 0.2}}, "sae": {"calm": {"x": 1}}})
    labels = tmp_path / "labels.json"
    io.write_json(labels, {**io.read_json(L.labels.labels), "renewed": True})
    renew(ck, "test", labels=labels, calibrations=[a, b])
    folders.verify(ck)  # every file matches its manifest again
    cal = io.read_json(L.calibrate.calibration)
    assert set(cal["probe"]) == {"happy", "sad"} and cal["sae"] == {"calm": {"x": 1}}
    assert cal["config"] == {"n_prompts": 3} and io.read_json(L.labels.labels)["renewed"]
    prov = io.read_json(L.provenance)
    assert prov["renewed"][-1]["parts"] == ["labels", "calibrate"]
    assert "command" in prov  # the original provenance is kept
    with pytest.raises(EmosaeError, match="no such file"):
        renew(ck, "test", calibrations=[tmp_path / "missing.json"])


@pytest.mark.parametrize("kind", ["probe", "sae"])
def test_every_shipped_vector_is_calibrated_with_its_layer_and_heldout_effect(kind):
    """Issue 20: every vector load_directions() hands out carries a default strength, the
    layer it steers at and the effect measured on held-out prompts."""
    from emosae.steering.directions import calibrations, load_directions

    vecs = load_directions(kind=kind)
    cal = calibrations(RunLayout(shipped_checkpoint()))[kind]
    assert len(vecs) == 48 and set(vecs) <= set(cal)
    for concept, v in vecs.items():
        c = cal[concept]
        assert v.default_strength == c["recommended"] is not None, concept
        assert v.hook_name == c["hook"] and v.layer == c["layer"], concept
        h = c["heldout"]
        assert h["n_prompts"] >= 10 and len(h["success"]["ci95"]) == 2, concept
        assert h["strength"] == c["recommended"] and len(h["readout_shift"]["ci95"]) == 2, concept
