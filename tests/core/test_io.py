"""Atomic writes, the run layout and the logger: the plumbing every stage relies on."""

import logging

import pytest

from emosae.core import io, log
from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout, files_in


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"x": 1})

    def boom(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        io.write_atomic(p, boom)
    assert io.read_json(p) == {"x": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]


def test_interrupted_write_leaves_no_temp(tmp_path):
    def killed(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.write_atomic(tmp_path / "b.txt", killed)
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    d = tmp_path / "ckpt"
    with io.atomic_dir(d) as t:
        (t / "old").write_text("1")
    with pytest.raises(RuntimeError), io.atomic_dir(d) as t:
        (t / "new").write_text("2")
        raise RuntimeError
    assert [p.name for p in d.iterdir()] == ["old"]  # untouched by the failed rewrite
    with io.atomic_dir(d) as t:
        (t / "new").write_text("2")
    assert [p.name for p in d.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_shared_atomic_dir_keeps_the_first_finished(tmp_path):
    d = tmp_path / "model"
    with io.atomic_dir(d, shared=True) as a, io.atomic_dir(d, shared=True) as b:
        (a / "who").write_text("a")
        (b / "who").write_text("b")
    # b finished first (inner block), a's rename then found the folder in place
    assert (d / "who").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_read_json_errors_are_one_line(tmp_path):
    with pytest.raises(EmosaeError, match="is missing"):
        io.read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(EmosaeError, match="is corrupt") as e:
        io.read_json(tmp_path / "bad.json")
    assert "\n" not in str(e.value)


def test_layout_paths_are_distinct_and_inside_the_run(tmp_path):
    L = RunLayout(tmp_path / "run")
    paths = [
        L.stages,
        *L.cache.outputs(),
        L.cache.shard(3),
        L.cache.sidecar(3),
        L.sae.cfg,
        L.sae.weights,
        L.sae.provenance,
        L.sae.metrics,
        *L.probes.outputs(),
        *L.labels.outputs(),
        *L.compare.outputs(),
        L.experiments.result("scenarios"),
        L.report.index,
        L.report.headline,
        L.report.plot("x"),
    ]
    assert len(set(paths)) == len(paths)
    assert all(p.is_relative_to(L.root) for p in paths)
    assert L.cache.shard(3).name == "shard_00003.safetensors"


def test_files_in_skips_temp_files(tmp_path):
    io.write_text(tmp_path / "done.json", "{}")
    (tmp_path / ".half.json.tmp").write_text("")
    assert files_in(tmp_path) == [tmp_path / "done.json"]


def test_only_rank_zero_logs_unless_asked(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="emosae")
    monkeypatch.setenv("RANK", "1")
    log.logger.info("from rank 1")
    log.logger.error("rank 1 failed")
    monkeypatch.setenv(log.ALL_RANKS_ENV, "1")
    log.logger.info("all ranks now")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv(log.ALL_RANKS_ENV)
    log.logger.info("from rank 0")
    got = [r.getMessage() for r in caplog.records]
    assert got == ["rank 1 failed", "all ranks now", "from rank 0"]


def test_library_is_silent_until_configured(capsys, monkeypatch):
    ours = [h for h in log.logger.handlers if isinstance(h, log._Stderr)]
    monkeypatch.setattr(log.logger, "handlers", [h for h in log.logger.handlers if h not in ours])
    monkeypatch.setattr(log.logger, "level", logging.NOTSET)
    log.logger.info("nobody asked")
    out = capsys.readouterr()
    assert out.out == "" and "nobody asked" not in out.err


def test_markers_name_the_version_and_newer_formats_are_refused(tmp_path):
    """A folder carries the emosae version that wrote it; one written by a newer file
    format is refused with both versions named, before anything is read or written."""
    import json

    import emosae
    from emosae.core import folders

    d = folders.claim(tmp_path / "p", "probes")
    folders.seal(d, "probes")
    mark = folders.read_marker(d)
    assert mark["emosae"] == emosae.__version__ and mark["kind"] == "probes"
    major, minor = (int(x) for x in emosae.__version__.split(".")[:2])
    (d / ".emosae.json").write_text(
        json.dumps({"kind": "probes", "emosae": f"{major}.{minor + 1}.0"})
    )
    for call in (folders.verify, lambda f: folders.check_claimable(f, "probes")):
        with pytest.raises(EmosaeError, match=f"written by emosae {major}.{minor + 1}.0.*upgrade"):
            call(d)
    (d / ".emosae.json").write_text(json.dumps({"kind": "probes"}))  # 0.1: still read
    folders.verify(d)


def test_atomic_writes_never_touch_a_file_at_the_old_temp_name(tmp_path):
    """A user's file at `.NAME.tmp` (the temp name of emosae 0.3) or at `.write_test`
    stays as it was: temp and probe names are fresh ones of emosae's own."""
    from emosae.core import io

    mine = tmp_path / ".out.json.tmp"
    mine.write_text("notes")
    probe = tmp_path / ".write_test"
    probe.write_text("more notes")
    io.write_json(tmp_path / "out.json", {"a": 1})
    io.check_writable(tmp_path)
    assert mine.read_text() == "notes" and probe.read_text() == "more notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".out.json.tmp",
        ".write_test",
        "out.json",
    ]
