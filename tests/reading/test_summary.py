"""The summary page of a dataset read: the top records per concept are the highest, the
distribution counts every record, and in a browser the page draws them from data without
ever turning a record into markup."""

from emosae.reading.batch import Record
from emosae.reading.summary import BINS, summary_data, summary_page, top_positions

EVIL = "</script><img src=x onerror=\"document.title='pwned'\"><b>bold</b>"


def _rows(n: int = 12):
    concepts = ["joy", "fear", EVIL]
    rows = [
        {
            "id": i if i % 3 else f"id-{i}{EVIL}",
            "kind": "text" if i % 2 else "conversation",
            "scores": {"joy": i * 0.5, "fear": -i * 0.25 + (i == 7) * 10, EVIL: (i % 4) - 1.5},
        }
        for i in range(n)
    ]
    recs = [
        Record(r["id"], f"record {i} {EVIL}" if i % 2 else [{"role": "user", "content": EVIL}])
        for i, r in enumerate(rows)
    ]
    return rows, recs, concepts


def test_top_records_and_distribution_by_hand():
    rows, recs, concepts = _rows()
    tops = top_positions(rows, concepts, 3)
    assert tops["joy"] == [11, 10, 9] and tops["fear"][0] == 7
    data = summary_data(rows, recs, concepts, 3, links={11: "traces/pages/11.html"})
    d = data["dist"]["joy"]
    assert sum(d["counts"]) == 12 and len(d["counts"]) == BINS
    assert (d["lo"], d["hi"], d["mean"]) == (0.0, 5.5, 2.75)
    assert data["top"]["joy"][0] == [11, 5.5]
    assert data["records"]["11"]["href"] == "traces/pages/11.html"
    assert data["records"]["10"]["href"] is None
    assert data["kinds"] == {"conversation": 6, "text": 6}
    assert data["records"]["0"]["text"] == f"user: {EVIL}"


def test_summary_page_in_a_browser_shows_data_as_text(tmp_path, browser_page):
    rows, recs, concepts = _rows()
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "11.html").write_text("<title>trace 11</title>")
    data = summary_data(rows, recs, concepts, 4, links={11: "pages/11.html"})
    page_file = tmp_path / "summary.html"
    page_file.write_text(summary_page(data, f"read {EVIL}"))
    html = page_file.read_text()
    assert html.count("</script>") == 2 and "innerHTML" not in html
    assert "http://" not in html and "https://" not in html  # no external assets
    page, errors = browser_page
    page.goto(page_file.as_uri())
    assert page.locator("#concept option").count() == 3
    assert page.locator("#hist div").count() == BINS
    assert page.locator("#top .rec").count() == 4
    first = page.inner_text("#top .rec >> nth=0")
    assert "joy +5.50" in first and EVIL in first  # the record's text, as text
    assert page.locator("img").count() == 0 and page.locator("#top b").count() == 4
    assert page.title() != "pwned"
    page.select_option("#concept", "fear")
    assert "fear +8.25" in page.inner_text("#top .rec >> nth=0")
    page.select_option("#concept", EVIL)
    assert page.locator("#top .rec").count() == 4 and page.locator("img").count() == 0
    page.select_option("#concept", "joy")
    page.click("#top a")
    page.wait_for_load_state()
    assert page.title() == "trace 11"
    assert errors == []
