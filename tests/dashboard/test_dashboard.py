"""Feature dashboards: exact tests of the collected data on a synthetic cache and an
identity SAE (activations are the cache rows themselves, so every number can be
computed by hand), the HTML and the Neuronpedia export; and one real test that builds
the dashboard of a smoke run and opens it in a headless browser."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.core.layout import DashboardFiles
from emosae.dashboard.data import (
    DashboardConfig,
    FeatureData,
    Inputs,
    band_of,
    check_features,
    collect,
    context_rows,
    log_histogram,
)
from emosae.dashboard.neuronpedia import KEYS, export_features, source_id
from emosae.dashboard.pages import PageMeta, context_html, feature_page, index_page

N, CTX, SPLIT, V = 40, 10, 25, 50  # rows, rows per context, first shard's rows, vocabulary
NASTY = 45  # token id (no row's) whose text needs escaping: feature 0's top logit
LOGS = (-0.95, -0.45, 0.05, 0.55)  # log10 activations of feature 0, mid-bin


def feature_rows() -> torch.Tensor:
    """[N, 3]: feature 0 fires on even rows at 10**LOGS[(i % 8) // 2]; feature 1 fires
    once (row 37); feature 2 never."""
    x = torch.zeros(N, 3)
    for i in range(0, N, 2):
        x[i, 0] = 10 ** LOGS[(i % 8) // 2]
    x[37, 1] = 5.0
    x[:, 2] = -1.0
    return x


class FakeCache:
    """The reader's interface over in-memory rows, in two shards (25 + 15 rows)."""

    def __init__(self, x: torch.Tensor):
        self.parts = [x[:SPLIT], x[SPLIT:]]
        self.manifest = {"shards": [{"rows": len(p)} for p in self.parts], "model": "fake"}
        self.n_rows = len(x)
        self._meta = {
            "tokens": torch.arange(N) % V,
            "context_ids": torch.arange(N) // CTX,
            "doc_ids": torch.arange(N) // CTX,
        }

    def shard_rows(self, shard, hook, index=None):
        x = self.parts[shard]
        return x if index is None else x[torch.as_tensor(index)]

    def meta(self, name):
        return self._meta[name]

    def documents(self):
        return [{"source": f"doc{d}"} for d in range(N // CTX)]


class IdentitySAE(torch.nn.Module):
    def __init__(self, d: int = 3):
        super().__init__()
        self.W_dec = torch.nn.Parameter(torch.eye(d))
        self.cfg = SimpleNamespace(d_in=d, d_sae=d)

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T)


class FakeTokenizer:
    def decode(self, ids):
        return "".join("<b>&'" if i == NASTY else f" t{i}" for i in ids)


def fake_model(d: int = 3):
    W_U = torch.zeros(d, V)
    W_U[0, NASTY], W_U[0, 9] = 2.0, -3.0  # feature 0 promotes NASTY, suppresses 9
    return SimpleNamespace(tokenizer=FakeTokenizer(), W_U=W_U, cfg=SimpleNamespace(d_model=d))


CONCEPTS = ["joy", "fear"]


def fake_inputs(probe_vecs=None) -> Inputs:
    scores = {
        "train_auroc": torch.tensor([[0.6, 0.5, 0.5], [0.9, 0.5, 0.5]]),
        "heldout_auroc": torch.tensor([[0.7, 0.4, 0.5], [0.95, 0.6, 0.5]]),
    }
    from emosae.features.labels import upgrade_labels

    # as emosae 0.1 wrote labels.json ("emotion"): read under the new names
    labels = upgrade_labels(
        {"features": {"0": {"label": "fear", "kind": "emotion", "emotions": ["fear"]}}}
    )
    return Inputs(
        IdentitySAE(),
        FakeCache(feature_rows()),
        "blocks.1.hook_resid_post",
        labels,
        scores,
        CONCEPTS,
        probe_vecs,
        CONCEPTS,
        "fake-model",
    )


CFG = DashboardConfig(top_contexts=4, bands=4, per_band=3, context_window=3, logit_tokens=2)


@pytest.fixture(scope="module")
def collected() -> list[FeatureData]:
    vecs = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    return collect(fake_inputs(vecs), [2, 0, 1], fake_model(), CFG)


def test_log_histogram_counts_by_hand():
    a = torch.tensor([[10**-0.95, 0.0], [10**0.55, 2.0], [0.0, -1.0], [10**0.55, 1e-9]])
    h = log_histogram(a, DashboardConfig(bin_width=0.5))  # bins of 0.5 from -6
    assert h.shape == (2, 20) and h.sum().item() == 5
    assert h[0, 10].item() == 1 and h[0, 13].item() == 2  # -0.95 -> [-1, -0.5); 0.55 -> [0.5, 1)
    assert h[1, 12].item() == 1 and h[1, 0].item() == 1  # log10 2 = 0.30; 1e-9 clamps to bin 0


def test_density_and_cropped_histogram(collected):
    f0, f1, f2 = collected
    assert [f.index for f in collected] == [0, 1, 2]
    assert (f0.n_tokens, f0.n_fired, f0.density) == (N, 20, 0.5)
    assert f0.hist_edges[0] == pytest.approx(-1.0) and f0.hist_edges[-1] == pytest.approx(0.6)
    assert f0.hist_counts == [5, 0, 0, 0, 0] * 3 + [5]
    assert (f1.n_fired, f1.hist_counts) == (1, [1])
    assert (f2.n_fired, f2.hist_counts, f2.top, f2.max_activation) == (0, [], [], 0.0)


def test_top_contexts_are_the_largest_and_stay_in_their_context(collected):
    f0, f1, _ = collected
    top_rows = {6, 14, 22, 30, 38}  # the rows at the maximum 10**0.55
    assert len(f0.top) == 4
    for c in f0.top:
        assert c["activation"] == pytest.approx(10**0.55) == pytest.approx(f0.max_activation)
        row = int(c["tokens"][c["at"]].strip()[1:])  # token id = row % 50 = row here
        assert row in top_rows and c["source"] == f"doc{row // CTX}"
        ids = [int(t.strip()[1:]) for t in c["tokens"]]
        assert ids == context_rows(row, torch.arange(N) // CTX, 3)  # one context only
        want = feature_rows()[ids, 0].clamp_min(0).tolist()  # across the shard boundary too
        assert c["values"] == pytest.approx(want, abs=1e-4)
    (c,) = f1.top
    assert c["activation"] == 5.0 and c["tokens"][c["at"]] == " t37"


def test_context_rows_clip_at_context_boundaries():
    ctx = torch.arange(N) // CTX
    assert context_rows(30, ctx, 3) == [30, 31, 32, 33]
    assert context_rows(38, ctx, 3) == [35, 36, 37, 38, 39]
    assert context_rows(22, ctx, 3) == [20, 21, 22, 23, 24, 25]


def test_band_of_splits_zero_to_max_in_equal_slices():
    a = torch.tensor([[0.0, 0.1, 1.0, 1.01, 3.9, 4.0, -2.0]]).T
    assert band_of(a, torch.tensor([4.0]), 4).flatten().tolist() == [-1, 0, 0, 1, 3, 3, -1]


def test_quantile_sampling_picks_from_each_band(collected):
    f0 = collected[0]
    mx = 10**0.55
    assert [b["lo"] for b in f0.bands] == pytest.approx([mx * i / 4 for i in range(4)])
    assert [b["hi"] for b in f0.bands] == pytest.approx([mx * i / 4 for i in range(1, 5)])
    # populations: band 0 has 10 rows (two values), band 1 five, band 2 none, band 3 five
    assert [len(b["contexts"]) for b in f0.bands] == [3, 3, 0, 3]
    for b in f0.bands:
        rows = {int(c["tokens"][c["at"]].strip()[1:]) for c in b["contexts"]}
        assert len(rows) == len(b["contexts"])  # no row twice
        for c in b["contexts"]:
            assert b["lo"] < c["activation"] <= b["hi"] + 1e-6


def test_band_sampling_is_random_across_seeds_but_reproducible():
    inp, model = fake_inputs(), fake_model()

    def band0(seed):
        (f0,) = collect(inp, [0], model, DashboardConfig(per_band=3, seed=seed))
        return {int(c["tokens"][c["at"]].strip()[1:]) for c in f0.bands[0]["contexts"]}

    assert band0(1) == band0(1)
    seen = set().union(*(band0(s) for s in range(20)))
    assert seen == {i for i in range(0, N, 2) if (i % 8) // 2 < 2}  # all ten rows of band 0


def test_logit_lens_auroc_and_cosines(collected):
    f0 = collected[0]
    assert f0.logit_top[0] == "<b>&'" and f0.logit_bottom[0] == " t9"
    assert [r["concept"] for r in f0.auroc] == ["fear", "joy"]
    assert f0.auroc[0] == pytest.approx({"concept": "fear", "train": 0.9, "heldout": 0.95})
    # decoder row e0: cos with [1,1,0] is 1/sqrt(2), with [-1,0,0] is -1
    assert [r["concept"] for r in f0.cosines] == ["fear", "joy"]
    assert [r["cosine"] for r in f0.cosines] == pytest.approx([-1.0, 2**-0.5])
    assert (f0.label, f0.kind, f0.concepts) == ("fear", "concept", ["fear"])
    assert collected[1].label is None and collected[1].kind == "unlabelled"


def test_features_out_of_range_are_one_line_errors():
    assert check_features([5, 2, 5], 6) == [2, 5]
    with pytest.raises(EmosaeError, match=r"feature 6 is out of range: the SAE has 6 \(0-5\)"):
        check_features([1, 6], 6)
    with pytest.raises(EmosaeError, match="out of range"):
        collect(fake_inputs(), [3], fake_model(), CFG)


META = PageMeta("test <run>", "fake-model", "blocks.1.hook_resid_post", 3)


def test_html_escapes_token_text_and_colours_by_activation():
    c = {
        "activation": 2.0,
        "source": "a<b",
        "tokens": [" x", "<b>&'", "\n"],
        "values": [0.0, 2.0, 1.0],
        "at": 1,
    }
    h = context_html(c, vmax=2.0)
    assert "&lt;b&gt;&amp;&#x27;" in h and "<b>" not in h and "a&lt;b" in h
    assert "title='2.000' style='background:rgba(255,140,0,0.900)'" in h
    assert "title='0.000' style='background:transparent'" in h
    assert "\u21b5" in h  # newline shown, not breaking the line


def test_feature_and_index_pages(collected, tmp_path):
    files = DashboardFiles(tmp_path)
    page = feature_page(collected[0], META, files)
    assert page.count("<svg") == 1 and page.count("<rect") == len(collected[0].hist_counts)
    assert page.count("class=ctx") == 4 + 9 and "test &lt;run&gt;" in page
    assert "href='index.html'" in page and "<tr class=hit><td>fear</td>" in page
    assert "<script" not in page and "<b>" not in page and "&lt;b&gt;&amp;&#x27;" in page
    assert "Never fires" in feature_page(collected[2], META, files)
    style = FeatureData(
        index=7,
        label="style: joy",
        kind="style",
        concepts=["joy"],
        style_covariate="quotes",
        auroc=[
            {"concept": "fear", "train": 0.5, "heldout": 0.8},
            {"concept": "joy", "train": 0.9, "heldout": 0.75},
        ],
    )
    idx = index_page([*collected, style], META, files)
    assert idx.index("<h2>fear (1)") < idx.index("<h2>style (1)") < idx.index("<h2>unlabelled (2)")
    # each feature's concept, then the runner-up on held-out stories
    assert "<td>fear</td><td class=num>0.950</td><td>joy</td><td class=num>0.700</td>" in idx
    assert "<td>style (quotes)</td><td>joy</td><td class=num>0.750</td><td>fear</td>" in idx
    for f in (0, 1, 2):
        assert f"href='{files.feature(f).name}'" in idx
    assert "id=filter" in idx and "neuronpedia.json" in idx


def test_neuronpedia_export_has_exactly_the_upload_keys(collected):
    out = export_features(collected, "fake-model", "blocks.1.hook_resid_post", 3)
    json.dumps(out)
    assert [o["index"] for o in out] == [0, 1, 2]
    for o, fd in zip(out, collected, strict=True):
        assert tuple(o) == KEYS
        assert o["modelId"] == "fake-model" and o["source"] == "1-emosae-res-3"
        assert isinstance(o["density"], float) and o["density"] == fd.density
        assert all(isinstance(t, str) for t in o["top_logits"] + o["bottom_logits"])
        for a in o["activations"]:
            assert set(a) == {"tokens", "values"} and len(a["tokens"]) == len(a["values"])
            assert all(isinstance(t, str) for t in a["tokens"])
            assert all(isinstance(v, float) for v in a["values"])
    assert out[0]["explanations"] == [{"description": "fear"}] and out[1]["explanations"] == []
    assert len(out[0]["activations"]) == 4 + 9 and out[2]["activations"] == []
    assert source_id("blocks.12.hook_mlp_out", 64) == "12-emosae-hook-64"


def _cli(argv: list[str]) -> None:
    from emosae.cli.dashboard import add_dashboard_parser

    p = argparse.ArgumentParser()
    handlers: dict = {}
    add_dashboard_parser(p.add_subparsers(dest="command"), handlers)
    args = p.parse_args(["dashboard", *argv])
    handlers["dashboard"](args)


def test_cli_names_what_the_run_folder_lacks(tmp_path):
    with pytest.raises(EmosaeError, match="no run folder at"):
        _cli(["--run", str(tmp_path / "nope")])
    with pytest.raises(EmosaeError, match=r"has no trained SAE .*cfg\.json is missing"):
        _cli(["--run", str(tmp_path)])
    (tmp_path / "sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text("{}")
    with pytest.raises(EmosaeError, match=r"has no feature labels .*`emosae labels --run"):
        _cli(["--run", str(tmp_path)])
    (tmp_path / "sae" / "cfg.json").write_text('{"d_sae": 8}')
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "labels.json").write_text("{}")
    with pytest.raises(EmosaeError, match=r"^feature 8 is out of range: the SAE has 8 \(0-7\)$"):
        _cli(["--run", str(tmp_path), "--features", "3", "8", "--out", str(tmp_path / "d")])
    (tmp_path / "sae" / ".emosae.json").write_text('{"kind": "sae"}')
    with pytest.raises(EmosaeError, match="it is an emosae sae folder, not a dashboard folder"):
        _cli(["--run", str(tmp_path), "--out", str(tmp_path / "sae")])


# ---------------------------------------------------------------- real: smoke run + browser


def _check_report(page, report) -> None:
    """The run's report: every plot loads; a trace page colours its tokens and shows
    values on hover."""
    page.goto((report / "index.html").as_uri())
    imgs = page.locator("img")
    assert imgs.count() >= 5
    for i in range(imgs.count()):
        assert imgs.nth(i).evaluate("el => el.complete && el.naturalWidth > 0"), i
    assert page.locator("a[href='trace_tylenol.html']").count() == 1
    page.goto((report / "trace_tylenol.html").as_uri())
    spans = page.locator("#text span")
    assert spans.count() > 20 and "Tylenol" in page.inner_text("#text")
    assert spans.nth(spans.count() - 1).get_attribute("class") == "read"
    spans.nth(5).hover()
    assert page.locator("#tip").is_visible() and "token 5" in page.inner_text("#tip")
    page.select_option("#concept", "calm")
    assert "rgba" in (spans.nth(5).get_attribute("style") or "")


@pytest.mark.real
def test_smoke_dashboard_renders_in_a_browser(smoke_run, tmp_path, capsys, browser_page):
    run = smoke_run[0]
    labels = json.loads((run / "labels" / "labels.json").read_text())
    feats = sorted(int(f) for f in labels["features"])[:2]
    assert len(feats) == 2, "the smoke run labels fewer than two features"
    files = DashboardFiles(tmp_path / "dash")
    _cli(["--run", str(run), "--features", *map(str, feats), "--out", str(files.dir)])
    assert f"dashboard written to {files.index}" in capsys.readouterr().out
    exported = json.loads(files.neuronpedia.read_text())
    assert [o["index"] for o in exported] == feats and all(tuple(o) == KEYS for o in exported)
    assert all(o["activations"] and o["explanations"] for o in exported)
    page, errors = browser_page
    _check_report(page, run / "report")
    page.goto(files.index.as_uri())
    assert page.locator("section.group tbody tr").count() == 2
    page.fill("#filter", "no-such-concept-zzz")
    assert page.locator("section.group:visible").count() == 0
    assert page.inner_text("#shown") == "0"
    page.fill("#filter", str(feats[1]))
    assert page.locator("section.group tbody tr:visible").count() >= 1
    page.click(f"a[href='{files.feature(feats[1]).name}']")
    page.wait_for_load_state()
    assert page.url == files.feature(feats[1]).as_uri()
    page.goto(files.feature(feats[0]).as_uri())
    hist = page.locator("svg.hist")
    assert hist.count() == 1 and hist.bounding_box()["height"] > 100
    assert page.locator("svg.hist rect").count() >= 1
    ctx = page.locator("div.ctx")
    assert ctx.count() >= 2 and ctx.first.is_visible()
    assert page.locator("div.ctx span.at").first.get_attribute("title")
    assert page.locator("table.auroc tbody tr").count() == len(labels["concepts"])
    assert errors == []


def test_pages_show_whether_a_label_transfers(tmp_path):
    files = DashboardFiles(tmp_path)
    fd = FeatureData(index=3, label="joy", kind="concept", concepts=["joy"])
    assert "outside corpus" not in feature_page(fd, META, files)
    fd.outside_auroc, fd.transfers = [0.41, 0.30, 0.52], False
    page = feature_page(fd, META, files)
    assert "outside corpus AUROC 0.410 [0.300, 0.520] (corpus-specific)" in page
    assert "concept, corpus-specific" in index_page([fd], META, files)
