"""Nothing lost, nothing silently wrong: every bad input the README promises to catch
gives exit status 2 and one line on stderr, before any work, with nothing written or
deleted; every tampered artifact is named where it is read. On real files and the real
default model (the CLI runs in-process through `emosae.cli.main`, as the console does)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emosae.cli import main
from emosae.core.errors import EmosaeError
from emosae.core.io import sha256_file
from emosae.core.layout import CacheFiles, RunLayout, shipped_checkpoint

pytestmark = pytest.mark.real

CACHE_FLAGS = "--layers 2 --max_tokens 1024 --context_len 64 --contexts_per_shard 4 --dtype float32"


def snapshot(folder):
    """Every file under `folder` with its sha256 and mode (nothing written or deleted)."""
    return {
        str(p.relative_to(folder)): (sha256_file(p), p.stat().st_mode)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(capsys, argv, match):
    """Run the CLI; assert exit 2 with one line on stderr matching `match`."""
    rc = main(argv.split() if isinstance(argv, str) else argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("emosae: error:"), err
    assert match in err, err
    return err


@pytest.fixture(scope="module")
def cache(tmp_path_factory, real_model):
    out = tmp_path_factory.mktemp("rel") / "cache"
    assert main(["cache", "--out", str(out), *CACHE_FLAGS.split()]) == 0
    return out


def test_outputs_have_normal_permissions(cache):
    mask = os.umask(0)
    os.umask(mask)
    for p in [*cache.glob("*.safetensors"), *cache.glob("*.json")]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask, p


def test_foreign_folders_are_never_written(tmp_path, capsys, cache):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (tmp_path / "file").write_text("x")
    before = snapshot(tmp_path)
    refused(capsys, f"train --cache {cache} --out {mine}", "holds files emosae did not write")
    refused(capsys, f"cache --out {mine} {CACHE_FLAGS}", "holds files emosae did not write")
    refused(capsys, f"run --preset smoke --out {mine}", "holds files emosae did not write")
    refused(capsys, f"probes --out {mine}", "holds files emosae did not write")
    refused(capsys, f"train --cache {cache} --out {cache}", "emosae cache folder, not a sae")
    refused(capsys, f"train --cache {cache} --out {tmp_path / 'file'}", "is a file")
    refused(capsys, f"labels --run {mine}", "holds files emosae did not write")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "flags, match",
    [
        ("--d_sae 16 --k 32", "k (32) must be at most d_sae (16)"),
        ("--epochs nan", "epochs must be a finite positive number"),
        ("--lr nan", "lr must be positive"),
        ("--lr inf", "lr must be positive"),
        ("--hook blocks.2.nothing", "is not in the cache"),
    ],
)
def test_bad_training_numbers_refused_before_work(tmp_path, capsys, cache, flags, match):
    t0 = time.perf_counter()
    refused(capsys, f"train --cache {cache} --out {tmp_path / 'sae'} {flags}", match)
    assert time.perf_counter() - t0 < 10  # not after training
    assert list(tmp_path.iterdir()) == []


def test_bad_cache_inputs_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "c"
    refused(capsys, f"cache --out {out} --layers 99", "valid layers are 0..29")
    refused(capsys, f"run --preset smoke --out {out} --layer 30", "valid layers are 0..29")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n\nna\xefve".encode("latin-1"))
    refused(capsys, f"cache --out {out} --sources {latin}", "not UTF-8")
    refused(capsys, f"cache --out {out} --sources {tmp_path / 'nope.txt'}", "no such corpus")
    for bad, match in (("42", "expected a JSON object"), ('{"text": null}', "must be text")):
        (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n' + bad + "\n")
        refused(capsys, f"cache --out {out} --sources {tmp_path / 'c.jsonl'}", match)
    assert not out.exists()


def test_one_writer_per_folder_and_stale_locks_taken_over(tmp_path, capsys, cache):
    from emosae.core.folders import lock_path

    out = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(out).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        refused(capsys, f"cache --out {out} {CACHE_FLAGS}", f"being written by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert main(["cache", "--out", str(out), *CACHE_FLAGS.split()]) == 0  # dead holder
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not lock_path(out).exists()
    assert [p.read_bytes() for p in CacheFiles(out).shards()] == [
        p.read_bytes() for p in CacheFiles(cache).shards()
    ]


def test_corrupt_shard_and_edited_manifest_are_named(tmp_path, capsys, cache):
    bad = tmp_path / "bad"
    shutil.copytree(cache, bad)
    shard = CacheFiles(bad).shard(1)
    b = bytearray(shard.read_bytes())
    b[-7] ^= 0xFF
    shard.write_bytes(bytes(b))
    refused(
        capsys,
        f"train --cache {bad} --out {tmp_path / 's'}",
        "shard_00001.safetensors does not match",
    )
    assert main(["cache", "--out", str(bad), *CACHE_FLAGS.split()]) == 0  # repairs that shard
    assert "1 of 4 shards to compute (1)" in capsys.readouterr().err
    assert shard.read_bytes() == CacheFiles(cache).shard(1).read_bytes()
    side = CacheFiles(bad).sidecar(2)
    side.write_text(side.read_text()[:10])  # a sidecar cut short by a kill: redo that shard
    assert main(["cache", "--out", str(bad), *CACHE_FLAGS.split()]) == 0
    assert "1 of 4 shards to compute (2)" in capsys.readouterr().err
    man = json.loads(CacheFiles(bad).manifest.read_text())
    man["d_model"] = 512
    CacheFiles(bad).manifest.write_text(json.dumps(man))
    refused(capsys, f"train --cache {bad} --out {tmp_path / 's'}", "holds [252, 576]")


@pytest.fixture
def ckpt(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(shipped_checkpoint(), dst)
    return RunLayout(dst)


def flip(path, at=-100):
    b = bytearray(path.read_bytes())
    b[at] ^= 0x10
    path.write_bytes(bytes(b))


def test_tampered_sae_is_named(ckpt, capsys):
    from emosae.sae.training import load_sae
    from emosae.steering.directions import load_directions

    flip(ckpt.sae.weights, at=ckpt.sae.weights.stat().st_size // 2)
    with pytest.raises(EmosaeError, match="sae_weights.safetensors does not match its sha256"):
        load_sae(ckpt.sae.dir)
    refused(capsys, f"steer --emotion happy --kind sae --directions {ckpt.root}", "does not match")
    with pytest.raises(EmosaeError, match="sae_weights.safetensors does not match"):
        load_directions(ckpt.root, kind="sae")


@pytest.mark.parametrize("seal", [True, False])
def test_tampered_vectors_json_is_named(ckpt, seal):
    from emosae.core.layout import MARKER_NAME
    from emosae.steering.directions import load_directions

    if not seal:  # an unsealed folder (emosae 0.1) still gets its values checked
        (ckpt.probes.dir / MARKER_NAME).unlink()
    meta = json.loads(ckpt.probes.vectors_meta.read_text())
    for bad in (meta["mean_resid_norm"]["15"] * 1000, float("nan"), -1.0):
        meta["mean_resid_norm"]["15"] = bad
        ckpt.probes.vectors_meta.write_text(json.dumps(meta))
        if seal:
            with pytest.raises(EmosaeError, match="vectors.json does not match its sha256"):
                load_directions(ckpt.root)
        elif not 0 < bad < 1e6 or bad != bad:
            with pytest.raises(EmosaeError, match="mean_resid_norm of layer 15"):
                load_directions(ckpt.root)
    ckpt.probes.vectors_meta.write_text(ckpt.probes.vectors_meta.read_text()[:-40])
    with pytest.raises(EmosaeError, match="vectors.json"):
        load_directions(ckpt.root)


def test_truncated_files_are_one_line_errors(ckpt):
    from emosae.core.layout import MARKER_NAME
    from emosae.sae.training import load_sae

    (ckpt.sae.dir / MARKER_NAME).unlink()  # past the seal: the loaders' own checks
    cfg = ckpt.sae.cfg.read_text()
    ckpt.sae.cfg.write_text(cfg[:-20])
    with pytest.raises(EmosaeError, match="not a loadable SAE checkpoint") as e:
        load_sae(ckpt.sae.dir)
    assert "\n" not in str(e.value)
    ckpt.sae.cfg.write_text(cfg)
    ckpt.sae.weights.write_bytes(ckpt.sae.weights.read_bytes()[:1000])
    with pytest.raises(EmosaeError, match="not a loadable SAE checkpoint"):
        load_sae(ckpt.sae.dir)


def test_tampered_steering_vector_files(tmp_path):
    from safetensors.torch import load_file, save_file

    from emosae.steering.directions import load_directions
    from emosae.steering.vector import SteeringVector

    st = load_directions()["calm"].save(tmp_path / "calm")
    t = load_file(str(st))
    save_file({**t, "blocks.3.hook_resid_post": torch.ones(576)}, str(st))
    with pytest.raises(EmosaeError, match="lists hooks"):
        SteeringVector.load(tmp_path / "calm")
    save_file({k: 3 * v for k, v in t.items()}, str(st))
    with pytest.raises(EmosaeError, match="recorded norm"):
        SteeringVector.load(tmp_path / "calm")


def test_bad_steering_inputs(capsys, real_model, tiny_model):
    from emosae.lm.chat import chat_reply
    from emosae.steering.directions import load_directions

    for s in ("nan", "inf", "-inf"):
        refused(capsys, ["steer", "--emotion", "happy", f"--strength={s}"], "finite number")
    refused(capsys, "steer --emotion happy --max-new-tokens 0", "must be >= 1")
    long = "please " * 9000
    refused(
        capsys, ["steer", "--emotion", "happy", "--prompt", long], "more than the model's context"
    )
    v = load_directions()["happy"]
    with pytest.raises(EmosaeError, match="finite number"), v.apply(real_model, float("nan")):
        pass
    with pytest.raises(EmosaeError, match="d_model is 32"), v.apply(tiny_model, 0.1):
        pass
    with pytest.raises(EmosaeError, match="max_new_tokens must be an integer >= 1"):
        chat_reply(real_model, "hi", max_new_tokens=0)


# ---------------------------------------------------------------- round two (issue 25)


def test_export_never_overwrites_a_users_file(tmp_path, capsys, monkeypatch):
    """Case 1: a file the user owns (also the .json beside a safetensors export) is
    refused, nothing is written; emosae's own output is replaced; --force replaces."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user.gguf").write_text("x")
    (tmp_path / "user.json").write_text("x")
    before = snapshot(tmp_path)
    gguf = "export --emotion calm --format gguf --out"
    refused(capsys, f"{gguf} user.gguf", "refusing to overwrite user.gguf")
    st = "export --emotion calm --format safetensors --out user"
    refused(capsys, st, "refusing to overwrite user.json")
    assert snapshot(tmp_path) == before  # not even user.safetensors
    assert main(f"{gguf} mine.gguf".split()) == 0
    assert main(f"{gguf} mine.gguf".split()) == 0  # emosae's own file: replaced
    (tmp_path / "mine.gguf").write_bytes(b"edited by hand")
    refused(capsys, f"{gguf} mine.gguf", "or it changed since")
    assert (tmp_path / "mine.gguf").read_bytes() == b"edited by hand"
    assert main(f"{st} --force".split()) == 0
    assert (tmp_path / "user.json").read_text() != "x"
    assert json.loads((tmp_path / "user.json").read_text())["concept"] == "calm"


def test_read_html_never_overwrites_a_users_file(tmp_path, capsys, real_model, monkeypatch):
    """Case 2, and case 5's missing folder (made, not a traceback)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.html").write_text("x")
    refused(capsys, "read --prompt hi --html mine.html", "refusing to overwrite mine.html")
    assert (tmp_path / "mine.html").read_text() == "x"
    assert main("read --prompt hi --html nodir/x.html".split()) == 0
    assert "<!doctype html>" in (tmp_path / "nodir" / "x.html").read_text()
    assert main("read --prompt hi --html mine.html --force".split()) == 0
    assert "<!doctype html>" in (tmp_path / "mine.html").read_text()


def test_calibrate_save_leaves_the_shipped_checkpoint_alone(tmp_path, capsys, monkeypatch):
    """Case 3: `--save` with the shipped directions writes the user's calibration folder
    ($EMOSAE_HOME), which load_directions() then prefers; the checkpoint is unchanged."""
    from emosae.core.layout import user_calibration
    from emosae.experiments.calibration import CalibrationConfig, save_calibrations
    from emosae.steering.directions import load_directions

    monkeypatch.setenv("EMOSAE_HOME", str(tmp_path / "home"))
    ship = shipped_checkpoint()
    before = snapshot(ship)
    shipped = load_directions()
    argv = (
        "steer --calibrate --emotion happy --save --n-prompts 1 --n-heldout 1 --max-new-tokens 2 "
        "--strengths 0.1"
    )
    assert main(argv.split()) == 0
    assert snapshot(ship) == before
    mine = user_calibration(ship.name).calibrate.calibration
    assert f"saved to {mine}" in capsys.readouterr().out
    cal = json.loads(mine.read_text())
    assert cal["config"]["n_prompts"] == 1 and cal["probe"]["happy"]["strengths"] == [0.0, 0.1]
    vecs = load_directions()
    assert vecs["happy"].default_strength == cal["probe"]["happy"]["recommended"]
    from emosae.steering.directions import calibrations

    ours = calibrations(RunLayout(ship))["probe"]["happy"]
    assert shipped["happy"].default_strength == ours["recommended"] is not None
    assert (
        shipped["happy"].hook_name == ours["hook"]
        and vecs["happy"].hook_name == cal["probe"]["happy"]["hook"]
    )
    assert vecs["calm"].default_strength == shipped["calm"].default_strength  # not calibrated
    assert "your calibrated strength" in capsys.readouterr().err
    with pytest.raises(EmosaeError, match="installed package or a shipped checkpoint"):
        save_calibrations(RunLayout(ship), {"probe": []}, CalibrationConfig())
    assert snapshot(ship) == before


def test_text_must_be_valid_nonempty_strings(capsys, real_model, no_model):
    """Case 4 and case 10's empty prompts: one line, before any model loads (CLI), and
    an EmosaeError from the Python API."""
    from emosae.lm.chat import render_chat
    from emosae.reading.trace import read
    from emosae.steering.directions import load_directions

    bad = b"\xed\xa0\x80".decode("utf-8", "surrogateescape")  # argv's invalid UTF-8
    for argv in (
        ["read", "--prompt", bad],
        ["read", "--text", bad],
        ["steer", "--emotion", "happy", "--prompt", bad],
    ):
        refused(capsys, argv, "is not valid UTF-8")
    for argv in (
        ["read", "--prompt", ""],
        ["read", "--text", " "],
        ["steer", "--emotion", "happy", "--prompt", ""],
    ):
        refused(capsys, argv, "is empty")
    vecs = load_directions()
    for what, match in (
        ("\ud800", "not valid UTF-8"),
        ([{"role": "user", "content": "hi \udcff"}], "not valid UTF-8"),
        ([{"role": "user", "content": 5}], "message 0's content must be text"),
        ([{"role": "user", "content": ""}], "is empty"),
        ("", "is empty"),
    ):
        with pytest.raises(EmosaeError, match=match):
            read(real_model, what, vecs)
    with pytest.raises(EmosaeError, match="must be text"):
        render_chat(real_model, [{"role": "user", "content": None}])


def test_unwritable_output_paths_are_one_line(tmp_path, capsys, monkeypatch, no_model):
    """Case 5: a place that cannot be written, or a folder named as a file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    refused(capsys, "export --emotion calm --out /proc/c.gguf", "cannot write")
    refused(capsys, "export --emotion calm --out d", "output d is a folder")
    refused(capsys, "read --prompt hi --html /proc/x.html", "cannot write")
    refused(capsys, f"cache --out /proc/c {CACHE_FLAGS}", "cannot write to output folder /proc/c")
    refused(capsys, "read --prompt hi --html d", "must name an .html file")
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and not any((tmp_path / "d").iterdir())


HOSTILE = '"><img src=x onerror="window.pwned=1">'


def test_trace_page_shows_hostile_concept_names_as_text(tmp_path, browser_page):
    """Case 6: a concept set from a stranger names a concept with markup; hovering the
    tokens shows the name as text and runs no script."""
    from emosae.reading.page import trace_page

    reading = {
        "tokens": ["<b>hi</b>", " there", " friend"],
        "concepts": [HOSTILE, "calm"],
        "scores": [[1.0, -1.0], [2.0, 0.5], [0.5, 0.25]],
        "at_read": [0.5, 0.25],
        "kind": "conversation",
        "read_from": 2,
        "hook": "blocks.15.hook_resid_post",
    }
    page_file = tmp_path / "t.html"
    page_file.write_text(trace_page(reading, title=HOSTILE))
    page, errors = browser_page
    page.goto(page_file.as_uri())
    spans = page.locator("#text span")
    assert spans.count() == 3
    for i, v in enumerate(["1.00", "2.00", "0.50"]):
        spans.nth(i).hover()
        tip = page.inner_text("#tip").splitlines()
        assert tip[0].startswith(f"token {i} ") and tip[1] == f"{HOSTILE}: {v}", tip
    page.select_option("#concept", index=1)  # calm: the menu still works
    spans.nth(1).hover()
    assert page.inner_text("#tip").splitlines()[1] == "calm: 0.50"
    assert page.inner_text("h1") == HOSTILE
    assert page.locator("img").count() == 0
    page.wait_for_timeout(300)  # an onerror would have fired by now
    assert page.evaluate("window.pwned") is None
    assert errors == []


def test_flags_that_would_do_nothing_are_refused(capsys, no_model):
    """Case 7 (and the rest of the sweep's flags): steering never ignores a flag."""
    refused(capsys, "steer --emotion happy --layers 99", "--layers only works with --calibrate")
    refused(capsys, "steer --emotion happy --save", "--save only works with --calibrate")
    refused(capsys, "steer --emotion happy --n-prompts 3", "--n-prompts only works with")
    refused(capsys, "steer --emotion happy --calibrate --strength 0.2", "--calibrate sweeps")


def test_duplicate_stories_are_refused(tmp_path, capsys):
    """Case 8: the same story twice (same concept, same text up to spacing) would count
    twice in the held-out n; the bundled set has none."""
    from emosae.data.concepts import bundled, load_concept_set

    d = tmp_path / "set"
    shutil.copytree(Path(__file__).parents[1] / "examples" / "social_concepts", d)
    lines = (d / "stories.jsonl").read_text().splitlines()
    rec = json.loads(lines[4])
    rec["text"] = "  " + rec["text"].replace(" ", "  ", 1)
    (d / "stories.jsonl").write_text("\n".join([*lines, json.dumps(rec)]) + "\n")
    n = len(lines) + 1
    match = f"stories.jsonl:{n}: duplicate story of '{rec['concept']}' (the same text as line 5)"
    with pytest.raises(EmosaeError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_concept_set(d)
    refused(capsys, f"probes --concepts {d} --out {tmp_path / 'p'}", "duplicate story")
    assert not (tmp_path / "p").exists()
    stories = bundled().stories
    assert len({(s.concept, " ".join(s.text.split())) for s in stories}) == len(stories)


def test_second_writer_refused_before_the_model_loads(tmp_path, capsys, no_model):
    """Case 9: the lock is checked with the other inputs, not after the model loads."""
    from emosae.core.folders import lock_path

    out = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(out).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
        t0 = time.perf_counter()
        busy = f"being written by pid {holder.pid}"
        refused(capsys, f"cache --out {out} {CACHE_FLAGS}", busy)
        refused(capsys, f"probes --out {out}", busy)
        refused(capsys, f"run --preset smoke --out {out}", busy)
        refused(capsys, f"labels --run {out}", busy)
        assert time.perf_counter() - t0 < 10
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock_path(out).name]


def test_insane_strengths_are_refused(capsys, no_model):
    """Case 10: strengths are relative to the residual norm; |s| > 4 (ten times the
    largest calibrated strength) only gives noise, so it is refused."""
    refused(capsys, "steer --emotion happy --strength 1e30", "beyond any sane strength")
    refused(capsys, "steer --emotion happy --strength -5", "|s| <= 4")
    refused(
        capsys, "steer --emotion happy --calibrate --strengths 0.2 50", "--strengths 50 is beyond"
    )


@pytest.mark.parametrize(
    "cfg, match",
    [
        ("null", "cfg.json holds null, not an object"),
        (
            {"d_in": 500},
            "cfg.json says d_sae 4608 x d_in 500, but W_dec in sae_weights.safetensors is [4608, 576]",
        ),
        ({"d_sae": "wide"}, "d_in and d_sae in cfg.json must be positive integers"),
    ],
)
def test_labels_sae_config_errors_are_one_complete_line(
    ckpt, tmp_path, capsys, no_model, cfg, match
):
    """Case 10: `labels --sae` with a config that does not fit its weights."""
    from emosae.core.layout import MARKER_NAME

    sae = ckpt.sae
    (sae.dir / MARKER_NAME).unlink()
    good = json.loads(sae.cfg.read_text())
    sae.cfg.write_text(cfg if isinstance(cfg, str) else json.dumps({**good, **cfg}))
    err = refused(capsys, f"labels --sae {sae.dir} --out {tmp_path / 'lab'}", match)
    assert not err.endswith(":")
    assert not (tmp_path / "lab").exists()


def test_strength_far_beyond_the_calibrated_one_warns(capsys, real_model):
    """Case 10: a sane strength that is still over ten times the calibrated one steers,
    with a warning."""
    from emosae.steering.directions import load_directions

    r = load_directions()["happy"].default_strength
    assert 0 < r < 0.39
    assert main("steer --emotion happy --strength 3.9 --max-new-tokens 1".split()) == 0
    assert f"--strength 3.9 is over ten times happy's calibrated {r:+g}" in capsys.readouterr().err
    assert main(f"steer --emotion happy --strength {r} --max-new-tokens 1".split()) == 0
    assert "over ten times" not in capsys.readouterr().err
