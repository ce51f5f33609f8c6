"""The pipeline's shape: stages declared once, every stage knob a flag of `emosae run`,
stage keys that change exactly when their outputs could, and the headline as data."""

import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from emosae.cli.commands import _parse_dataclass
from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout
from emosae.pipeline import runner
from emosae.pipeline.config import RunConfig, preset
from emosae.pipeline.headline import headline_rows
from emosae.pipeline.stages import STAGE_NAMES, STAGES


def test_stages_are_declared_once_in_dependency_order():
    assert STAGE_NAMES == (
        "cache",
        "train",
        "probes",
        "labels",
        "compare",
        "validate",
        "dashboard",
        "calibrate",
        "experiments",
        "report",
    )  # fmt: skip
    for i, s in enumerate(STAGES):
        assert set(s.inputs) <= set(STAGE_NAMES[:i]), s.name
    L, cfg = RunLayout("/r"), RunConfig()
    outs = [p for s in STAGES if s.name not in ("train", "report") for p in s.outputs(L, cfg)]
    assert len(outs) == len(set(outs))


def test_every_stage_knob_is_a_run_flag():
    argv = (
        "--lr 0.001 --warmup_steps 7 --train.seed 3 --l2 0.5 --neutral_var 0.3 --read.skip 5 "
        "--train.batch_size 256 --cache.batch_size 4 --corpus.max_tokens 9999 --k 16 "
        "--min_auroc 0.8 --skip pressure --layer 12"
    ).split()
    cfg = _parse_dataclass(RunConfig, argv, "emosae run", default=preset("smoke"))
    t = cfg.train
    assert (t.lr, t.warmup_steps, t.seed, t.batch_size, t.sae.k) == (0.001, 7, 3, 256, 16)
    assert (cfg.probes.probe.l2, cfg.probes.probe.neutral_var, cfg.probes.read.skip) == (
        0.5,
        0.3,
        5,
    )
    assert (cfg.cache.batch_size, cfg.cache.corpus.max_tokens) == (4, 9999)
    assert cfg.labels.min_auroc == 0.8 and cfg.experiments.skip == ("pressure",)
    assert cfg.layer == 12 and cfg.probes.max_stories_per_concept == 6  # smoke preset kept


def test_bad_knob_values_are_one_line_errors():
    with pytest.raises(EmosaeError, match="unknown experiment"):
        _parse_dataclass(RunConfig, ["--skip", "dance"], "emosae run", default=preset("smoke"))
    with pytest.raises(EmosaeError, match="lr must be positive"):
        _parse_dataclass(RunConfig, ["--lr", "nan"], "emosae run", default=preset("smoke"))


def test_stage_keys_hash_their_config_inputs_and_code(tmp_path, monkeypatch):
    log = runner.StageLog(RunLayout(tmp_path))
    by_name = {s.name: s for s in STAGES}
    cfg = preset("smoke")
    key = {n: runner.stage_key(s, cfg, log) for n, s in by_name.items()}
    lr = replace(cfg, train=replace(cfg.train, lr=1e-3))
    assert runner.stage_key(by_name["train"], lr, log) != key["train"]
    assert runner.stage_key(by_name["cache"], lr, log) == key["cache"]  # not its knob
    assert runner.stage_key(by_name["probes"], replace(cfg, layer=10), log) != key["probes"]
    log.data["train"] = {"outputs": {"sae/cfg.json": "0" * 64}}
    assert runner.stage_key(by_name["labels"], cfg, log) != key["labels"]  # new input
    _edited_package(tmp_path / "pkg", monkeypatch, "sae/cache.py")
    assert runner.stage_key(by_name["cache"], cfg, log) != key["cache"]  # its code changed


def _edited_package(root, monkeypatch, rel):
    """Point the source hash at a copy of the package with `rel` edited."""
    import shutil

    import emosae
    from emosae.core import provenance

    src = Path(emosae.__file__).parent
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / rel).write_text((root / rel).read_text() + "\n# an edit\n")
    monkeypatch.setattr(provenance, "_PKG", root)
    monkeypatch.setattr(provenance, "RESOURCES", root / "data" / "resources")
    # fresh memos for the copy; the real ones come back untouched after the test
    monkeypatch.setattr(provenance, "import_closure", cache(provenance.import_closure.__wrapped__))
    monkeypatch.setattr(runner, "source_hash", cache(provenance.source_hash.__wrapped__))
    return root


def test_editing_the_report_keeps_the_cache_and_sae_keys(tmp_path, monkeypatch):
    """Stage keys hash the source a stage runs, not the git commit: an edit of the
    report module recomputes the report and nothing upstream of it."""
    from emosae.core import provenance

    by_name = {s.name: s for s in STAGES}
    before = {n: runner.stage_code(s) for n, s in by_name.items()}
    _edited_package(tmp_path / "pkg", monkeypatch, "pipeline/report.py")
    after = {n: runner.stage_code(s) for n, s in by_name.items()}
    assert after["report"] != before["report"]
    changed = sorted(n for n in before if after[n] != before[n])
    assert changed == ["report"], changed
    assert "emosae.pipeline.report" not in provenance.import_closure(("emosae.sae.cache",))


def test_unknown_stage_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(EmosaeError, match="unknown stage"):
        runner.run_pipeline(preset("smoke", out=str(tmp_path / "r")), only=("nonsense",))
    assert not (tmp_path / "r").exists()


def test_headline_rows_from_artifacts(tmp_path):
    L = RunLayout(tmp_path)
    assert headline_rows(L) == []
    L.sae.dir.mkdir()
    L.sae.metrics.write_text(
        json.dumps({"explained_variance": 0.812, "l0": 63.96, "dead_fraction": 0.05})
    )
    L.experiments.dir.mkdir()
    shifts = {
        "probe:calm": {"mean_elo_shift_steered": 1.26},
        "sae:calm": {"mean_elo_shift_steered": -3.0},
    }
    L.experiments.result("preferences").write_text(
        json.dumps(
            {
                "readout_vs_elo_r": {"blissful": 0.5},
                "elo_vs_paper_r": 0.1,
                "steering": {"strength": 0.2, "shifts": shifts},
            }
        )
    )
    rows = headline_rows(L)
    here = {r["what"]: r["here"] for r in rows}
    assert here["SAE explained variance (held-out tokens)"] == "0.81"
    assert here["SAE L0"] == "64.0" and here["SAE CE-loss recovered"] == "n/a"
    assert here["hostile readout on activity vs the model's own Elo, r"] == "n/a"
    assert here["Elo shift of steered activities, probe:calm (strength 0.2)"] == "1.3"
    assert here["Elo shift of steered activities, sae:calm (strength 0.2)"] == "-3.0"
    assert len(rows) == 4 + 3 + 2 and {r["command"] for r in rows} == {"emosae run"}
