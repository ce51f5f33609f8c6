"""`emosae read --input FILE --out OUT`: malformed records are one `file:line` error before
any work (or skipped and counted), rows equal `read_many`'s, Parquet holds the same rows, a
killed read resumes where it stopped and ends with the same file, outputs follow the
one overwrite rule, and traces plus the summary page are written."""

import json

import pytest
import torch

import emosae
from emosae.cli.main import main
from emosae.core.errors import EmosaeError
from emosae.reading import dataset
from emosae.reading.dataset import ReadJob, run_read_job
from emosae.reading.records import load_records, read_rows
from emosae.reading.trace import Basis

RECORDS = [
    {"text": "The soup was cold and nobody apologised."},
    {"id": "c1", "messages": [{"role": "user", "content": "My cat died this morning."}]},
    {"text": "What a wonderful surprise party! </script><img src=x onerror=alert(1)>"},
    {
        "id": "c2",
        "messages": [
            {"role": "user", "content": "I failed the exam."},
            {"role": "assistant", "content": "I'm sorry. You can retake it."},
            {"role": "user", "content": "They said I can't!"},
        ],
    },
    {"id": 7, "text": "I am terrified of the dark road home tonight."},
]


def _write(path, records, extra_lines=()):
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "bad, match",
    [
        ("{not json", ":3: not JSON"),
        ('{"id": "x"}', ":3: a record needs exactly one of 'text' and 'messages'"),
        ('{"text": ""}', ":3: 'text' must be a non-empty string"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', ":3: message 0"),
        ('["a list"]', ":3: a record is a JSON object"),
        ('{"id": "c1", "text": "again"}', ":3: duplicate id 'c1'"),
    ],
)
def test_malformed_record_is_one_line_before_any_work(tmp_path, capsys, bad, match):
    src = tmp_path / "in.jsonl"
    _write(src, RECORDS[:2], [bad])
    out = tmp_path / "out.jsonl"
    assert main(["read", "--input", str(src), "--out", str(out)]) == 2
    err = _err(capsys)
    assert f"{src}{match}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # nothing written


def test_skip_bad_counts_and_options_are_checked(tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", RECORDS, ["{oops", "", '{"text": 3}'])
    loaded = load_records(src, skip_bad=True)
    assert loaded.skipped == 2 and len(loaded.records) == 5
    assert [r.id for r in loaded.records] == [1, "c1", 3, "c2", 7]  # line numbers, else own
    assert loaded.lines == [1, 2, 3, 4, 5]
    assert "in.jsonl:6: not JSON" in capsys.readouterr().err  # each skipped one is named
    for argv, match in (
        (["--out", str(tmp_path / "o.jsonl"), "--text", "hi"], "need --input"),
        (["--input", str(src)], "--input needs --out"),
        (["--input", str(src), "--out", str(tmp_path / "o.csv")], "--out must be a .jsonl"),
        (["--input", str(src), "--out", str(src)], "refusing to overwrite"),
        (["--input", str(tmp_path / "no.jsonl"), "--out", str(tmp_path / "o.jsonl")], "not a file"),
    ):
        assert main(["read", *argv]) == 2
        assert match in _err(capsys)
    with pytest.raises(EmosaeError, match="--batch-size"):
        ReadJob(str(src), str(tmp_path / "o.jsonl"), batch_size=0)


@pytest.fixture(scope="module")
def shipped():
    return emosae.load_directions()


@pytest.mark.kernel_paths
@pytest.mark.real
def test_cli_rows_equal_read_many_with_traces_and_summary(tmp_path, capsys, real_model, shipped):
    src = _write(tmp_path / "in.jsonl", RECORDS)
    out, traces, page = tmp_path / "out.jsonl", tmp_path / "traces", tmp_path / "summary.html"
    argv = ["read", "--input", str(src), "--out", str(out), "--per-turn", "--top", "2"]
    assert main([*argv, "--traces", str(traces), "--html", str(page), "--batch-size", "2"]) == 0
    assert "read 5 records" in capsys.readouterr().out
    rows = read_rows(out)
    want = list(emosae.read_many(real_model, RECORDS, shipped, per_turn=True))
    assert [r["id"] for r in rows] == [1, "c1", 3, "c2", 7]
    for got, ref in zip(rows, want, strict=True):
        assert got["kind"] == ref["kind"] and set(got["scores"]) == set(shipped)
        # batch size 2 against read_many's 16: the README's promise, batched = single
        # within 1e-4 (float32 sums over other paddings; 1.1e-5 seen on one x86 machine,
        # 3e-6 on another: benchmarks/tolerance_noise.py)
        assert max(abs(got["scores"][c] - ref["scores"][c]) for c in shipped) < 1e-4
        assert ("turns" in got) == (got["kind"] == "conversation")
    assert [t["turn"] for t in rows[3]["turns"]] == [1]
    # traces: one entry per record, per-token scores whose read position gives the row
    index = json.loads((traces / "index.json").read_text())
    assert [e["id"] for e in index["records"]] == [1, "c1", 3, "c2", 7]
    assert index["concepts"] == list(shipped)
    from safetensors.torch import load_file

    shard = load_file(traces / index["records"][1]["shard"])
    s_TC = shard["1.scores"].float()
    at = s_TC[index["records"][1]["read_from"]]
    assert torch.allclose(at, torch.tensor([rows[1]["scores"][c] for c in shipped]), atol=2e-2)
    html = page.read_text()
    assert "pages/" in html and html.count("</script>") == 2  # the record's own is escaped
    assert any((traces / "pages").glob("*.html"))
    # a rerun may replace its own outputs; parquet holds the same rows
    assert main([*argv, "--out", str(tmp_path / "out.parquet")]) == 0
    import pyarrow.parquet as pq

    pq_rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [str(r["id"]) for r in pq_rows] == [str(r["id"]) for r in rows]
    # read again at the default batch size (16, against 2): the same 1e-4 promise
    assert pq_rows[0]["scores"] == pytest.approx(rows[0]["scores"], abs=1e-4)
    assert pq_rows[0]["turns"] is None and len(pq_rows[3]["turns"]) == 1
    assert main(argv) == 0  # out.jsonl is emosae's: replaced without --force


@pytest.mark.real
def test_killed_read_resumes_where_it_stopped(tmp_path, real_model, shipped, monkeypatch):
    src = _write(tmp_path / "in.jsonl", RECORDS)
    basis = Basis.of(shipped)
    job = ReadJob(str(src), str(tmp_path / "out.jsonl"), chunk=2, batch_size=2)
    calls = []
    real = dataset.read_plans

    def dies_on_second_chunk(model, basis, recs, *a):
        calls.append([r.id for r in recs])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, basis, recs, *a)

    monkeypatch.setattr(dataset, "read_plans", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_read_job(real_model, job, basis)
    assert not (tmp_path / "out.jsonl").exists()
    partial = tmp_path / ".out.jsonl.partial.jsonl"
    assert [r.get("emosae") for r in read_rows(partial)] == ["partial", None, None]  # marker
    with open(partial, "a") as f:
        f.write('{"id": "half a row wri')  # killed mid-write: dropped on resume
    calls.clear()
    monkeypatch.setattr(
        dataset, "read_plans", lambda m, b, recs, *a: calls.append(1) or real(m, b, recs, *a)
    )
    res = run_read_job(real_model, job, basis)
    assert res.n_resumed == 2 and res.n_read == 5 and len(calls) == 2  # chunks 2 and 3 only
    resumed = read_rows(tmp_path / "out.jsonl")
    fresh = ReadJob(str(src), str(tmp_path / "fresh.jsonl"), chunk=2, batch_size=2)
    run_read_job(real_model, fresh, basis)
    assert resumed == read_rows(tmp_path / "fresh.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    # a changed input reads anew rather than resuming a stale partial
    calls.clear()
    monkeypatch.setattr(dataset, "read_plans", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_read_job(real_model, job, basis)
    monkeypatch.setattr(dataset, "read_plans", real)
    _write(src, RECORDS[1:])
    res = run_read_job(real_model, job, basis)
    assert res.n_resumed == 0 and [r["id"] for r in read_rows(job.out)] == ["c1", 2, "c2", 7]


def test_output_file_rule(tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", RECORDS)
    mine = tmp_path / "mine.jsonl"
    mine.write_text("precious\n")
    argv = ["read", "--input", str(src), "--out", str(mine)]
    assert main(argv) == 2
    assert "refusing to overwrite" in _err(capsys) and mine.read_text() == "precious\n"
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    assert (
        main(
            [
                "read",
                "--input",
                str(src),
                "--out",
                str(tmp_path / "o.jsonl"),
                "--traces",
                str(folder),
            ]
        )
        == 2
    )
    assert "emosae did not write" in _err(capsys)
