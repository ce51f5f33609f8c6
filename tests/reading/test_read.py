"""`emosae.read` and `emosae read` on the real default model: held-out accuracy through
the public API equals the probe stage's, a user's own concept set fits and reads above
chance, conversation readings are z-scores against neutral prompts, and the heatmap
page is written whole."""

import shutil
from pathlib import Path

import pytest
import torch

import emosae
from emosae.cli.main import main

pytestmark = pytest.mark.real
EXAMPLE = Path(__file__).parents[2] / "examples" / "social_concepts"


NOISE = 1e-4
"""Batched = single within 1e-4 (the README's promise for reading): a story whose first and
second concepts are closer than that may rank them either way along another kernel path."""


def _accuracy(model, dirs, stories) -> tuple[float, float]:
    """Top-1 accuracy of `emosae.read` one story at a time, and how far it may differ from
    the same figure computed in padded batches: the share of stories whose top two
    concepts are within float noise of each other (0 on most machines)."""
    hits, ties = [], 0
    for s in stories:
        (first, a), (_, b) = emosae.read(model, s.text, dirs).top(2)
        hits.append(first == s.concept)
        ties += a - b < NOISE
    return sum(hits) / len(hits), ties / len(hits)


def test_read_reproduces_heldout_accuracy_of_probe_stage(layer15_probes, real_model):
    results, folder = layer15_probes
    (row,) = results["per_layer"]
    dirs = emosae.load_directions(folder)
    held = emosae.load_concept_set(None)
    stories = [s for s in held.stories if held.is_heldout(s)]
    assert len(stories) == results["n_heldout_stories"] == 288
    # the same stories, one at a time instead of in padded batches: identical top-1
    # (but for near ties, see NOISE)
    acc, ties = _accuracy(real_model, dirs, stories)
    assert acc == pytest.approx(row["diffmean_top1"], abs=ties + 1e-9)


def test_own_concept_set_fits_and_reads_above_chance(real_model, tmp_path):
    """Four non-emotion concepts, the default split (no split.json): held-out top-1 is
    far above chance, and reading through the public API gives the same number."""
    from emosae.data.concepts import load_concept_set
    from emosae.probes.vectors import ProbeJob, VectorsConfig, run_probe_job

    d = tmp_path / "set"
    shutil.copytree(EXAMPLE, d)
    (d / "split.json").unlink()
    lines = (d / "concepts.jsonl").read_text().splitlines()
    (d / "concepts.jsonl").write_text("\n".join(lines[:4]) + "\n")  # drop teaching
    stories = (d / "stories.jsonl").read_text().splitlines()
    (d / "stories.jsonl").write_text("\n".join(x for x in stories if "teaching" not in x[:40]))
    out = tmp_path / "probes"
    job = ProbeJob(
        out=str(out), concepts=str(d), probes=VectorsConfig(layers=(15,), max_dialogues=32)
    )
    res = run_probe_job(job, real_model)
    (row,) = res["per_layer"]
    assert res["concepts"] == ["deception", "urgency", "generosity", "competition"]
    assert res["chance_top1"] == 0.25 and res["n_heldout_stories"] == 12  # 3 of 12 topics
    assert row["diffmean_top1"] >= 0.75  # 3x chance
    cs = load_concept_set(d)
    dirs = emosae.load_directions(out)
    assert set(dirs) == set(cs.names) and dirs["urgency"].readout is not None
    held = [s for s in cs.stories if cs.is_heldout(s)]
    acc, ties = _accuracy(real_model, dirs, held)
    assert acc == pytest.approx(row["diffmean_top1"], abs=ties + 1e-9)


def test_conversation_readings_are_z_scores_against_neutral_prompts(layer15_probes, real_model):
    from emosae import data
    from emosae.reading.trace import Readout

    _, folder = layer15_probes
    dirs = emosae.load_directions(folder)
    prompts = [d.user for d in data.load_dialogues("train")]
    z = Readout.of(real_model, dirs).at_reply(prompts)
    assert z.mean(0).abs().max() < 1e-3
    assert (z.std(0) - 1).abs().max() < 1e-3
    # emosae.read of one conversation agrees with the batched readout at the read position
    one = emosae.read(real_model, [{"role": "user", "content": prompts[0]}], dirs)
    assert torch.allclose(one.at_read, z[0], atol=1e-3)
    assert one.kind == "conversation" and one.read_from == len(one.tokens) - 1


def test_read_command_prints_top_and_writes_page(layer15_probes, tmp_path, capsys):
    _, folder = layer15_probes
    page = tmp_path / "trace.html"
    prompt = "I just took 12000 mg of Tylenol. </script><script>alert(1)</script>"
    argv = ["read", "--directions", str(folder), "--prompt", prompt, "--top", "3"]
    assert main([*argv, "--html", str(page)]) == 0
    out = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("Moving model")]
    assert out[0].startswith("top concepts (before the reply") and len(out) == 5, out
    html = page.read_text()
    assert html.count("</script>") == 2  # ours only: the prompt's is escaped in the data
    assert '"kind":"conversation"' in html and "Tylenol" in html
    for bad, match in (
        (["--html", str(tmp_path / "x.txt")], "must name an .html file"),
        (["--concepts", "happy", "joyfull"], "unknown concept 'joyfull'"),
        (["--top", "0"], "--top must be >= 1"),
    ):
        assert main([*argv, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    # the page, and the ledger that lets a rerun replace it (and nothing else)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".emosae-outputs.json", "trace.html"]
