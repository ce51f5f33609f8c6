"""Nothing lost, round three (issue 30), the dataset monitor's part: the hidden side files
beside an output (partial, progress, lock, ledger) never empty, follow, replace or delete
what emosae did not write; ids stay distinct and exact; the traces folder is one read's;
bad paths are refused before any work; the summary page survives hostile records; a text
with nothing readable is named, not scored. Each test names the issue's case it guards."""

import json
import os
import subprocess
import sys

import pytest
from test_reliability import refused  # the one CLI-refusal check of the reliability tests

import emosae
from emosae.core.errors import EmosaeError
from emosae.core.folders import SideFile, lock, lock_path

GOOD = [
    {"id": "a", "text": "The soup was cold and nobody apologised."},
    {"id": "b", "messages": [{"role": "user", "content": "My cat died this morning."}]},
    {"id": "c", "text": "What a wonderful surprise party for my birthday!"},
]
OTHER = [
    {"id": f"o{i}", "text": f"Another file, record number {i}, reads calmly."} for i in range(3)
]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def files(folder):
    """Every entry under `folder`: name -> bytes (a link: its target's name)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model: what it refuses, it refuses first."""

    def load_model(*a, **k):
        raise AssertionError("the model loaded before the input was checked")

    monkeypatch.setattr("emosae.lm.models.load_model", load_model)


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "good.jsonl", GOOD)
    return tmp_path


# ---------------------------------------------------------------- side files (cases 1-4)


def test_users_file_at_the_partial_path_is_kept(here, capsys, no_model):
    """Case 1: `.p1.jsonl.partial.jsonl` holding the user's notes is neither emptied nor
    deleted: one line naming it, before the model loads."""
    (here / ".p1.jsonl.partial.jsonl").write_text("notes\n")
    before = files(here)
    refused(capsys, "read --input good.jsonl --out p1.jsonl", ".p1.jsonl.partial.jsonl is not")
    assert files(here) == before


def test_symlink_at_the_partial_path_is_not_followed(here, capsys, no_model):
    """Case 2: a link planted at the partial path (to a victim file, or dangling) is
    refused; the victim keeps its bytes."""
    (here / "victim.txt").write_text("victim\n")
    os.symlink("victim.txt", here / ".p2.jsonl.partial.jsonl")
    os.symlink("nowhere.txt", here / ".p3.jsonl.partial.jsonl")
    before = files(here)
    refused(capsys, "read --input good.jsonl --out p2.jsonl", "a symbolic link")
    refused(capsys, "read --input good.jsonl --out p3.jsonl", "a symbolic link")
    assert files(here) == before and not (here / "nowhere.txt").exists()
    # the helper itself: created exclusively, never through a link, removed only if ours
    side = SideFile(here / ".p2.jsonl.partial.jsonl", "partial")
    with pytest.raises(FileExistsError):
        side.create({"key": "k"})
    with pytest.raises(EmosaeError, match="a symbolic link"):
        side.remove()
    with pytest.raises(EmosaeError, match="a symbolic link"):
        side.replace({"key": "k"})
    assert (here / "victim.txt").read_text() == "victim\n"


def test_users_file_at_the_progress_path_is_kept(here, capsys, no_model):
    """Case 3: a user's `.pg.jsonl.progress.json` is neither replaced nor deleted."""
    (here / ".pg.jsonl.progress.json").write_text('{"mine": true}\n')
    before = files(here)
    refused(capsys, "read --input good.jsonl --out pg.jsonl", ".pg.jsonl.progress.json is not")
    assert files(here) == before


def test_users_file_at_the_lock_or_ledger_path_is_kept(here, capsys, no_model):
    """Case 4 (and the ledger, the fourth side file): a user's file or a link at
    `.lk.jsonl.emosae.lock` or `.emosae-outputs.json` is refused before any work; a
    stale lock emosae wrote (marked, or in emosae 0.2's unmarked shape) is still taken
    over, and emosae's own side files are read back."""
    (here / ".lk.jsonl.emosae.lock").write_text("my lock notes\n")
    before = files(here)
    refused(capsys, "read --input good.jsonl --out lk.jsonl", ".lk.jsonl.emosae.lock is not")
    assert files(here) == before
    sub = here / "sub"
    sub.mkdir()
    (sub / ".emosae-outputs.json").write_text("my list of outputs\n")
    refused(capsys, "read --input good.jsonl --out sub/o.jsonl", ".emosae-outputs.json is not")
    (here / "sub3").mkdir()
    os.symlink("../victim.json", here / "sub3" / ".emosae-outputs.json")
    refused(capsys, "read --input good.jsonl --out sub3/o.jsonl", "a symbolic link")
    assert (sub / ".emosae-outputs.json").read_text() == "my list of outputs\n"
    # emosae's own lock of a dead process, old shape and new, is taken over and removed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    pid = int(dead.stdout)
    host = os.uname().nodename
    for mark in ({}, {"emosae": "lock"}):
        lock_path(here / "t").write_text(json.dumps({**mark, "pid": pid, "host": host}))
        with lock(here / "t"):
            assert json.loads(lock_path(here / "t").read_text())["emosae"] == "lock"
        assert not lock_path(here / "t").exists()


# ---------------------------------------------------------------- ids (cases 6, 9, 12)


@pytest.mark.parametrize(
    "lines, match",
    [
        (
            ['{"text": "first, no id"}', '{"id": "1", "text": "second"}'],
            ":2: id '1' and the id 1 of line 1",
        ),
        (
            ['{"id": 1, "text": "first"}', '{"id": "1", "text": "second"}'],
            ":2: id '1' and the id 1 of line 1",
        ),
    ],
)
def test_ids_that_differ_do_not_collide_in_parquet(here, capsys, no_model, lines, match):
    """Case 6: an id-less record (line 1) and id "1", or 1 and "1", are refused for
    Parquet (which would write both as "1"), naming both lines, before the model loads."""
    (here / "in.jsonl").write_text("\n".join(lines) + "\n")
    before = files(here)
    refused(capsys, "read --input in.jsonl --out x.parquet", match)
    assert files(here) == before
    from emosae.reading.records import check_ids, load_records

    check_ids(load_records(here / "in.jsonl"), "in.jsonl", "x.jsonl")  # JSON keeps types


def test_huge_integer_id_is_refused_before_the_model_loads(here, capsys, no_model):
    """Case 12: an id of 10^23 with a Parquet --out: one line naming the line, before any
    work, no side file left."""
    (here / "in.jsonl").write_text(
        f'{{"id": 5, "text": "fine"}}\n{{"id": {10**23}, "text": "big"}}\n'
    )
    before = files(here)
    refused(
        capsys,
        "read --input in.jsonl --out x.parquet",
        "in.jsonl:2: id 100000000000000000000000 does not fit",
    )
    assert files(here) == before


def _summary(records, scores):
    from emosae.reading.batch import Record
    from emosae.reading.summary import summary_data, summary_page

    recs = [Record.of(r, n) for n, r in enumerate(records)]
    rows = [
        {"id": r.id, "kind": r.kind, "scores": {"joy": s, "fear": -s}}
        for r, s in zip(recs, scores, strict=True)
    ]
    return summary_page(summary_data(rows, recs, ["joy", "fear"], 3, {}), "hostile <!--<script>")


def test_summary_page_shows_ids_beyond_2_to_53_exactly(tmp_path, browser_page):
    """Case 9: an integer id a browser's JSON number would round (2^60 + 1) is shown with
    every digit."""
    big = 2**60 + 1
    page = tmp_path / "s.html"
    page.write_text(
        _summary([{"id": big, "text": "big id"}, {"id": 3, "text": "small"}], [2.0, 1.0])
    )
    p, errors = browser_page
    p.goto(page.as_uri())
    heads = p.locator("#top .rec .head").all_inner_texts()
    assert not errors, errors
    assert str(big) in heads[0] and "id 3 " in heads[1], heads


def test_summary_page_survives_a_comment_opener_in_a_record(tmp_path, browser_page):
    """Case 8: `<!--<script>` in a record (and `</script>`, `&amp;` and `<b>`) does not
    swallow the page: every record renders, its text shown literally."""
    hostile = [
        "hello <!--<script> and more",
        "close </script><b>bold</b> &amp; end",
        "plain",
    ]
    page = tmp_path / "s.html"
    page.write_text(
        _summary([{"id": n, "text": t} for n, t in enumerate(hostile)], [3.0, 2.0, 1.0])
    )
    p, errors = browser_page
    p.goto(page.as_uri())
    texts = p.locator("#top .rec .text").all_inner_texts()
    assert not errors, errors
    assert texts == hostile
    assert p.locator("b").count() == 3  # the page's own rank labels, no record's markup
    assert "<!--<script>" in p.title()


# ---------------------------------------------------------------- paths (case 14)


def test_outputs_inside_the_traces_folder_are_refused_first(here, capsys, no_model):
    """Case 14: `--out tr/out.jsonl --traces tr` and `--traces trx --html trx/pages/0.html`
    are refused before the model loads, nothing written."""
    before = files(here)
    refused(
        capsys,
        "read --input good.jsonl --out tr/out.jsonl --traces tr",
        "is inside the --traces folder tr",
    )
    refused(
        capsys,
        "read --input good.jsonl --out o.jsonl --traces trx --html trx/pages/0.html",
        "--html trx/pages/0.html is inside the --traces folder trx",
    )
    assert files(here) == before


# ---------------------------------------------------------------- real model (cases 7, 15)


@pytest.fixture(scope="module")
def basis():
    from emosae.reading.trace import Basis

    vecs = emosae.load_directions()
    return Basis.of({c: vecs[c] for c in ("happy", "afraid", "angry")})


@pytest.mark.real
def test_traces_of_two_inputs_never_mix_on_resume(tmp_path, real_model, basis, monkeypatch):
    """Case 7: a read killed after its first chunk, then another input read into the same
    traces folder, then the first resumed: the first reads anew (its traces were
    overwritten) and the index holds only its own records, each with a trace. The traces
    folder is locked while it is written."""
    from emosae.reading import dataset
    from emosae.reading.dataset import ReadJob, run_read_job

    big = _write(tmp_path / "big.jsonl", [*GOOD, *OTHER[:1]])
    good = _write(tmp_path / "good.jsonl", OTHER)
    tr = tmp_path / "shared_tr"
    first = ReadJob(str(big), str(tmp_path / "a.jsonl"), traces=str(tr), chunk=2, batch_size=2)
    real = dataset.read_plans
    calls = []

    def dies_on_second_chunk(model, b, recs, *a):
        calls.append(1)
        assert lock_path(tr.resolve()).exists()  # the traces folder is taken while written
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, b, recs, *a)

    monkeypatch.setattr(dataset, "read_plans", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_read_job(real_model, first, basis)
    monkeypatch.setattr(dataset, "read_plans", real)
    run_read_job(
        real_model, ReadJob(str(good), str(tmp_path / "b.jsonl"), traces=str(tr), chunk=2), basis
    )
    res = run_read_job(real_model, first, basis)
    assert res.n_resumed == 0 and res.n_read == 4
    index = json.loads((tr / "index.json").read_text())
    assert [e["id"] for e in index["records"]] == ["a", "b", "c", "o0"]
    assert [e["position"] for e in index["records"]] == [0, 1, 2, 3]
    assert not lock_path(tr.resolve()).exists()


@pytest.mark.real
def test_text_with_nothing_readable_is_named_not_scored(
    tmp_path, capsys, real_model, basis, monkeypatch
):
    """Case 15: a text of control characters (two tokens) or of one token reads no huge
    numbers: `read`, `read_many` and a dataset read name it (a dataset: `file:line`, or
    skipped and counted); a short text with a word after its first token still reads."""
    from emosae.reading.dataset import ReadJob, run_read_job
    from emosae.reading.records import load_records
    from emosae.reading.trace import read

    vecs = emosae.load_directions()
    three = {c: vecs[c] for c in basis.concepts}
    monkeypatch.setattr("emosae.lm.models.load_model", lambda *a, **k: real_model)
    for bad in ("\x01\x02", "hi", "\u200b\u200b"):
        refused(capsys, ["read", "--text", bad, "--concepts", "happy"], "nothing to read")
        with pytest.raises(EmosaeError, match="nothing to read"):
            read(real_model, bad, three)
        with pytest.raises(EmosaeError, match="nothing to read"):
            list(emosae.read_many(real_model, ["fine text here", bad], three))
    assert float(read(real_model, "hi there", three).at_read.abs().max()) < 20
    src = tmp_path / "in.jsonl"
    _write(src, [{"text": "A calm and quiet evening."}, {"text": "\x01\x02"}])
    job = ReadJob(str(src), str(tmp_path / "o.jsonl"))
    with pytest.raises(EmosaeError, match=f"{src}:2: nothing to read"):
        run_read_job(real_model, job, basis)
    skip = ReadJob(str(src), str(tmp_path / "o.jsonl"), skip_bad=True)
    res = run_read_job(real_model, skip, basis, load_records(src, True))
    assert res.n_read == 1 and res.n_skipped == 1
