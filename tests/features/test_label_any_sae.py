"""`emosae labels --sae PATH --out OUT` on an SAE made with sae-lens itself (not by
emosae), end to end on the real default model; a width or hook that does not fit the
model is a one-line error with nothing written."""

import json

import pytest
import torch

import emosae
from emosae.cli.main import main

pytestmark = pytest.mark.real
EMOS = ("happy", "afraid", "calm", "hostile")


def _sae_lens_sae(path, directions, hook="blocks.15.hook_resid_post", d_in=576):
    """A ReLU SAE built and saved by sae-lens: feature i reads the centred projection
    on the probe direction of EMOS[i]; the other features are random."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(d_in=d_in, d_sae=64, metadata=SAEMetadata(hook_name=hook))
    sae = StandardSAE(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, 64, generator=g) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(64, d_in, generator=g) / d_in**0.5)
        sae.b_enc.zero_()
        if directions is not None:
            sae.b_dec.copy_(directions[EMOS[0]].readout.center)
            for i, e in enumerate(EMOS):
                sae.W_enc[:, i] = directions[e].direction
                sae.W_dec[i] = directions[e].direction
    sae.save_model(str(path))
    return path


def test_label_an_sae_made_by_sae_lens(layer15_probes, tmp_path, capsys):
    _, folder = layer15_probes
    dirs = emosae.load_directions(folder)
    sae = _sae_lens_sae(tmp_path / "sae", dirs)
    out = tmp_path / "labels"
    assert main(["labels", "--sae", str(sae), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "false-discovery rate" in printed
    lab = json.loads((out / "labels.json").read_text())
    assert lab["hook"] == "blocks.15.hook_resid_post" and lab["d_sae"] == 64
    assert lab["null"]["permutations"] == 20 and "fdr" in lab["null"]
    feats = lab["features"]
    for i, e in enumerate(EMOS):
        # each planted feature carries its emotion in a label (alone, or in a cluster or
        # ambiguous label); the emotion steers with a feature labelled with it alone where
        # one exists, else with the best feature holding it, here the planted one
        lbl = feats[str(i)]["label"]
        assert e in lbl.split("+") or feats[str(i)]["kind"] == "cluster", (e, lbl)
        b = lab["best_per_concept"][e]
        assert b["kind"] == "concept" or (b["kind"], b["feature"]) == ("shared", i), (e, b)
        if b["kind"] == "concept":
            assert feats[str(b["feature"])]["label"] == e and b["heldout_rank"] == 1
    vecs = emosae.load_directions(out, kind="sae")
    assert len(vecs) == 48
    assert torch.allclose(vecs["calm"].direction, dirs["calm"].direction, atol=1e-5)
    assert vecs["calm"].mean_norms["blocks.15.hook_resid_post"] > 0


@pytest.mark.parametrize(
    "hook,d_in,match",
    [
        ("blocks.15.hook_resid_post", 512, "the SAE is 512 wide but"),
        ("blocks.40.hook_resid_post", 576, "reads blocks.40.hook_resid_post, which"),
    ],
)
def test_sae_that_does_not_fit_is_one_line_error(tmp_path, capsys, hook, d_in, match):
    sae = _sae_lens_sae(tmp_path / "sae", None, hook, d_in)
    out = tmp_path / "labels"
    assert main(["labels", "--sae", str(sae), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not out.exists()
