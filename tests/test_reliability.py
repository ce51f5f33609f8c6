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
