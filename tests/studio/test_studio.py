"""`emosae studio`: the slider ranges by hand; the streamed reply against `chat_reply`
(steered and not) and its hooks; and the app on the real default model, served once for
the module on a free loopback port, driven over HTTP and in headless Chromium: a chat
with coloured tokens and bars, a steered reply beside the unsteered one, sliders at rest
that steer nothing, a too-long prompt, a client that disconnects (mid-reply and mid-prompt),
a busy model, feature pages, forged Host headers, and the command's default address and
start-up time. Every test name contains `studio` (`-k studio`)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emosae.core.layout import DashboardFiles, RunLayout, shipped_checkpoint
from emosae.lm.chat import chat_reply, render_chat
from emosae.studio.session import FALLBACK_RANGE, safe_range, stream_reply

PROMPT = "Tell me about your weekend."
N = 10  # tokens per reply: short, so the tests stay fast on two cores


# ---------------------------------------------------------------- slider ranges (no model)
def test_studio_safe_range_walks_out_from_zero_on_each_side():
    cal = {
        "strengths": [-0.4, -0.2, 0.0, 0.2, 0.4],
        "ppl_ratio": [2.5, 1.5, 1.0, 1.2, 2.1],
        "budget": 2.0,
    }
    assert safe_range(cal) == (-0.2, 0.2)
    # a broken strength nearer 0 hides a good one further out
    cal["ppl_ratio"] = [1.1, 3.0, 1.0, 1.9, 1.95]
    assert safe_range(cal) == (0.0, 0.4)
    cal["ppl_ratio"] = [9.0, 9.0, 1.0, float("nan"), 1.0]
    assert safe_range(cal) == (0.0, 0.0)
    # a positive-only sweep (emosae >= 0.3; the held-out report checks -r): symmetric,
    # and a KL budget breaks the walk like the perplexity budget
    cal = {"strengths": [0.0, 0.1, 0.2, 0.3], "ppl_ratio": [1.0, 1.1, 1.5, 1.9], "budget": 2.0}
    assert safe_range(cal) == (-0.3, 0.3)
    cal.update(kl=[0.0, 0.01, 0.04, 0.2], kl_budget=0.05)
    assert safe_range(cal) == (-0.2, 0.2)
    assert FALLBACK_RANGE == (-0.4, 0.4)


# ---------------------------------------------------------------- generation (real model)
def _hooks(model) -> int:
    return sum(len(h.fwd_hooks) for h in model.hook_dict.values())


@pytest.fixture(scope="module")
def vecs():
    from emosae.steering.directions import load_directions

    return load_directions()


@pytest.mark.real
def test_studio_stream_is_chat_reply_token_by_token_steered_or_not(real_model, vecs):
    msgs = [{"role": "user", "content": PROMPT}]
    chat = render_chat(real_model, msgs)
    pieces = list(stream_reply(real_model, chat, max_new_tokens=N))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == chat_reply(real_model, msgs, max_new_tokens=N)
    steer = [(vecs["calm"], 0.2)]
    steered = "".join(stream_reply(real_model, chat, steer, max_new_tokens=N)).strip()
    with vecs["calm"].apply(real_model, 0.2):  # its own positions: from the reply on
        assert steered == chat_reply(real_model, msgs, max_new_tokens=N)
    assert steered != "".join(pieces).strip()
    # a generator left half-way (a client gone) holds no hook between its steps
    gen = stream_reply(real_model, chat, steer, max_new_tokens=N)
    next(gen), next(gen)
    assert _hooks(real_model) == 0
    gen.close()


@pytest.mark.real
def test_studio_reading_cuts_each_message_into_its_own_tokens(real_model, vecs):
    from emosae.reading.trace import read
    from emosae.studio.readings import read_conversation

    msgs = [
        {"role": "user", "content": "assistant? 🌟 I got the job!"},
        {"role": "assistant", "content": "Congratulations 🎉 well done."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome."},
    ]
    out = read_conversation(real_model, msgs, vecs)
    assert [m["role"] for m in out["messages"]] == [m["role"] for m in msgs]
    for got, m in zip(out["messages"], msgs, strict=True):
        assert "".join(got["tokens"]) == m["content"]
        assert len(got["scores"]) == len(got["tokens"]) and len(got["scores"][0]) == len(vecs)
    # each assistant turn is read at the token before its reply, as emosae.read does
    assert [r["message"] for r in out["reads"]] == [1, 3]
    for r in out["reads"]:
        want = read(real_model, msgs[: r["message"]], vecs).at_read
        assert r["scores"] == pytest.approx(want.tolist(), abs=0.011)


# ---------------------------------------------------------------- the served app
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The shipped checkpoint as a run, with a dashboard page for every even feature."""
    from emosae.core import folders, io
    from emosae.core.layout import RunLayout

    run = tmp_path_factory.mktemp("studio") / "run"
    shutil.copytree(shipped_checkpoint(), run)
    cal = RunLayout(run).calibrate  # blissful uncalibrated here, to show the fallback
    record = io.read_json(cal.calibration)
    record["probe"].pop("blissful", None)
    io.write_json(cal.calibration, record)
    folders.seal(cal.dir, "calibrate")
    folders.seal(run, "checkpoint")
    pages = DashboardFiles(run / "dashboard")
    pages.dir.mkdir()
    pages.index.write_text("<html><body><h1>all features</h1></body></html>")
    for f in range(0, 4608, 2):
        pages.feature(f).write_text(f"<html><body><h1>feature {f}</h1></body></html>")
    return run


@contextmanager
def _serve(app) -> Iterator[str]:
    """The base url of `app` served on a free loopback port in a thread of this process."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=30)


@pytest.fixture(scope="module")
def served(real_model, run_dir):
    """(base url, studio) of the app served in a thread of this process."""
    from emosae.steering.directions import load_directions
    from emosae.studio.readings import Features
    from emosae.studio.server import create_app
    from emosae.studio.session import Studio, sliders

    vecs = load_directions(run_dir)
    studio = Studio(real_model, vecs, sliders(vecs, run_dir, "probe"), Features.of_run(run_dir))
    with _serve(create_app(studio)) as base:
        yield base, studio


def _post(base: str, body: dict) -> http.client.HTTPResponse:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/api/chat", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.conn = conn  # type: ignore[attr-defined]  # for _hang_up
    return resp


def _hang_up(resp: http.client.HTTPResponse) -> None:
    """The client goes away: the response and its connection's socket closed."""
    resp.close()
    resp.conn.close()  # type: ignore[attr-defined]


def _events(resp) -> list[dict]:
    return [json.loads(line) for line in resp.read().decode().splitlines() if line.strip()]


def _idle(base: str, timeout: float = 60) -> dict:
    host, port = base.removeprefix("http://").split(":")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/api/status")
        st = json.loads(conn.getresponse().read())
        if not st["busy"]:
            return st
        time.sleep(0.1)
    raise AssertionError("the studio stayed busy")


@pytest.mark.real
def test_studio_chat_streams_tokens_then_the_reading(served, real_model):
    base, studio = served
    msgs = [{"role": "user", "content": PROMPT}]
    ev = _events(_post(base, {"messages": msgs, "max_new_tokens": N}))
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "start" and kinds[-2:] == ["reply", "end"]
    assert set(kinds[1:-2]) == {"token"} and len(kinds) - 3 > 1
    reply = ev[-2]
    assert "".join(e["text"] for e in ev[1:-2]).strip() == reply["text"]
    assert reply["text"] == chat_reply(real_model, msgs, max_new_tokens=N)
    got = reply["reading"]["messages"]
    assert "".join(got[-1]["tokens"]) == reply["text"]
    assert len(reply["reading"]["reads"]) == 1 and got[-1]["features"][0]


@pytest.mark.real
def test_studio_refuses_bad_requests_with_a_message(served):
    base, studio = served
    too_far = round(studio.vecs["calm"].default_strength + 0.1, 3)  # past its safe range
    cases = [
        ({"messages": [{"role": "user", "content": "hi"}], "steer": {"calm": too_far}}, "range"),
        ({"messages": [{"role": "user", "content": "hi"}], "steer": {"nope": 0.1}}, "unknown"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "end with a user"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 0}, "max_new"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "bad request"),
    ]
    for body, want in cases:
        r = _post(base, body)
        assert r.status in (400, 422) and want in json.loads(r.read())["error"], body
    assert _idle(base)["hooks"] == 0


@pytest.mark.real
def test_studio_client_that_disconnects_leaves_no_hook(served):
    base, studio = served
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_new_tokens": 300}
    body["steer"] = {"calm": 0.2}
    resp = _post(base, body)
    assert resp.status == 200
    resp.readline(), resp.readline()  # start, first token
    t0 = time.monotonic()
    _hang_up(resp)  # the client goes away mid-reply
    st = _idle(base, timeout=30)
    assert time.monotonic() - t0 < 20, "the reply ran on after its client left"
    assert st["hooks"] == 0
    assert all(not h.fwd_hooks for h in studio.model.hook_dict.values())
    ok = _post(base, {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 2})
    assert ok.status == 200 and _events(ok)[-1]["event"] == "end"


@pytest.mark.real
def test_studio_client_gone_mid_prompt_releases_the_lock_within_seconds(served, real_model):
    """Issue 30, case 16: a long prompt's forward (about 30 s for 2k tokens on two shared
    cores) is cancelled at the model's next hook point when its client goes away: the
    lock is free within seconds and the next request is answered. Prompts over the
    budget the page shows are refused."""
    base, studio = served
    budget = studio.info()["max_prompt_tokens"]
    assert budget == studio.max_prompt_tokens == 2048
    msgs = [{"role": "user", "content": "word " * (budget - 60)}]
    assert budget - 100 < len(render_chat(real_model, msgs).tokens) <= budget
    resp = _post(base, {"messages": msgs, "max_new_tokens": 2})
    assert resp.status == 200
    assert json.loads(resp.readline())["event"] == "start"  # the prompt's forward begins
    t0 = time.monotonic()
    _hang_up(resp)
    st = _idle(base, timeout=5)
    assert time.monotonic() - t0 < 5 and st["hooks"] == 0
    ok = _post(base, {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 2})
    assert ok.status == 200 and _events(ok)[-1]["event"] == "end"
    assert _idle(base)["hooks"] == 0
    over = [{"role": "user", "content": "word " * (budget + 10)}]
    r = _post(base, {"messages": over, "max_new_tokens": 2})
    assert r.status == 400 and f"prompt budget of {budget} tokens" in json.loads(r.read())["error"]


@pytest.mark.real
def test_studio_feature_pages_come_from_feature_ids_only(served, run_dir):
    base, _ = served
    host, port = base.removeprefix("http://").split(":")

    def get(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()

    assert get("/features/feature_2.html") == (
        200,
        DashboardFiles(run_dir / "dashboard").feature(2).read_bytes(),
    )
    assert get("/features/")[0] == 200
    for bad in [
        "/features/feature_3.html",  # no page for odd features
        "/features/..%2fsae%2fcfg.json",
        "/features/%2e%2e/%2e%2e/etc/passwd",
        "/features/feature_2.html.bak",
        "/features/feature_-1.html",
    ]:
        assert get(bad)[0] == 404, bad
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/", headers={"Host": "evil.example"})  # DNS rebinding
    assert conn.getresponse().status == 400


@pytest.mark.real
def test_studio_on_every_interface_refuses_a_forged_host(served):
    """Issue 30, case 17: with --host 0.0.0.0 (served here on loopback only) the Host
    header must still name this machine or an --allow-host name."""
    from emosae.studio.server import create_app

    _, studio = served
    with _serve(create_app(studio, "0.0.0.0", allow_hosts=["Studio.example"])) as base:
        port = base.rsplit(":", 1)[1]

        def status(host: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
            conn.request("GET", "/api/info", headers={"Host": host})
            return conn.getresponse().status

        for forged in ["evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""]:
            assert status(forged) == 400, forged
        for ok in [
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "localhost",
            socket.gethostname(),
            f"{socket.gethostname()}:{port}",
            "studio.example",
            f"STUDIO.EXAMPLE:{port}",
        ]:
            assert status(ok) == 200, ok


# ---------------------------------------------------------------- in a browser
@pytest.fixture
def page(browser_page, served):
    pg, errors = browser_page
    outside: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith(served[0]) else outside.append(r.url))
    pg.goto(served[0] + "/")
    pg.wait_for_selector("body[data-ready='1']")
    pg.fill("#max-tokens", str(N))
    yield pg
    assert outside == [], "the page asked another host"
    assert [e for e in errors if "409" not in e and "400" not in e] == []


@pytest.mark.real
def test_studio_page_chat_shows_coloured_tokens_and_concept_bars(page, served, real_model):
    page.fill("#message", PROMPT)
    page.click("#send")
    page.wait_for_selector(".reply.plain svg.bars", timeout=90_000)
    want = chat_reply(real_model, [{"role": "user", "content": PROMPT}], max_new_tokens=N)
    assert page.inner_text(".reply.plain .msg.assistant") == want
    assert page.inner_text(".turn .msg.user") == PROMPT
    toks = page.locator(".msg .tok")
    assert toks.count() >= 6 + 2
    colours = {toks.nth(i).evaluate("e => e.style.background") for i in range(toks.count())}
    assert all(c.startswith("rgba(") for c in colours) and len(colours) > 2
    assert page.locator(".reply.plain svg.bars rect").count() == 8
    bg = "els => els.map(e => e.style.background)"
    before = toks.evaluate_all(bg)
    page.select_option("#concept", "afraid")  # another concept recolours the tokens
    assert toks.evaluate_all(bg) != before
    tok = page.locator(".reply.plain .tok").nth(1)
    tok.hover()
    assert page.locator("#tip").is_visible() and "top concepts" in page.inner_text("#tip")
    tok.click()
    links = page.locator("#inspect table.features a")
    rows = page.locator("#inspect table.features tr")
    assert rows.count() > 1
    ids = [int(x.removeprefix("#")) for x in links.all_inner_texts()]
    assert all(f % 2 == 0 for f in ids)  # only even features have pages
    if ids:
        with page.context.expect_page() as new:
            links.first.click()
        assert f"feature {ids[0]}" in new.value.inner_text("h1")
        new.value.close()


@pytest.mark.real
def test_studio_page_slider_steers_a_reply_beside_the_unsteered(page, real_model, run_dir):
    from emosae.steering.directions import calibrations, load_directions

    vecs = load_directions(run_dir)
    lo, hi = safe_range(calibrations(RunLayout(run_dir))["probe"]["calm"])
    assert hi > 0 and hi == vecs["calm"].default_strength
    page.select_option("#add-concept", "calm")
    page.click("#add")
    calm = page.locator(".slider input[data-concept='calm']")
    assert (calm.get_attribute("min"), calm.get_attribute("max")) == (str(lo), str(hi))
    assert page.locator(".slider[data-concept='calm'] .mark").count() == 1
    page.select_option("#add-concept", "blissful")  # uncalibrated: fallback, no mark
    page.click("#add")
    bliss = page.locator(".slider input[data-concept='blissful']")
    assert (bliss.get_attribute("min"), bliss.get_attribute("max")) == ("-0.4", "0.4")
    assert page.locator(".slider[data-concept='blissful'] .mark").count() == 0
    calm.fill(str(hi))
    assert f"calm {hi:+.2f}" in page.inner_text("#settings")
    page.fill("#message", PROMPT)
    page.click("#steer")
    page.wait_for_selector(".reply.steered svg.bars", timeout=120_000)
    plain = page.inner_text(".reply.plain .msg.assistant")
    steered = page.inner_text(".reply.steered .msg.assistant")
    assert plain and steered and plain != steered
    msgs = [{"role": "user", "content": PROMPT}]
    with vecs["calm"].apply(real_model, hi):
        assert steered == chat_reply(real_model, msgs, max_new_tokens=N)
    code = page.inner_text("#python")
    assert f'vecs["calm"].apply(model, strength={hi})' in code
    assert "blissful" not in code.split("with ")[-1]  # a slider at 0 does not steer


@pytest.mark.real
def test_studio_page_sliders_at_rest_steer_nothing(page, served, run_dir):
    """Issue 30, case 18: a slider at rest is exactly 0 and steers nothing, even where
    its range starts off the 0.01 grid; the panel shows the concepts that read highest
    before the reply (not one slider per calibrated concept)."""
    from emosae.steering.directions import calibrations

    sent: list[dict] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if "/api/chat" in r.url else None)
    assert page.locator(".slider").count() == 0
    page.fill("#message", PROMPT)
    page.click("#send")
    page.wait_for_selector(".reply.plain svg.bars", timeout=90_000)
    bars = page.locator(".reply.plain svg.bars text").all_text_contents()
    shown = page.locator(".slider").evaluate_all("els => els.map(e => e.dataset.concept)")
    assert shown == [b.split(" ")[0] for b in bars[:3]]
    c = "suspicious"  # calibrated to [-0.225, 0.225]: 0 is off its 0.01 grid from the minimum
    lo, hi = safe_range(calibrations(RunLayout(run_dir))["probe"][c])
    assert round(lo * 100) != lo * 100 and c not in shown
    page.select_option("#add-concept", c)
    page.click("#add")
    page.locator(f".slider input[data-concept='{c}']").fill(str(hi))
    assert f"{c} {hi:+.2f}" in page.inner_text("#settings")
    page.click(f".slider[data-concept='{c}'] button.zero")  # back to rest
    slider = page.locator(f".slider input[data-concept='{c}']")
    slider.press("ArrowRight")  # by keyboard: 0.01 a key, and back to exactly 0
    assert f"{c} +0.01" in page.inner_text("#settings")
    slider.press("ArrowLeft")
    values = page.locator(".slider input").evaluate_all("els => els.map(e => e.value)")
    assert len(values) == 4 and set(values) == {"0"}
    assert page.inner_text("#settings").startswith("none")
    assert ".apply(" not in page.inner_text("#python")
    page.fill("#message", "And then?")
    page.click("#steer")
    assert "move a steering slider" in page.inner_text("#error")
    page.wait_for_timeout(500)
    assert [b["steer"] for b in sent] == [{}], "steer sent a strength no slider was moved to"


@pytest.mark.real
def test_studio_page_too_long_prompt_shows_an_error(page, served):
    _, studio = served
    budget = studio.max_prompt_tokens
    assert page.inner_text("#budget") == f"prompt budget {budget} tokens"
    page.fill("#message", "word " * (budget + 100))
    page.click("#send")
    err = page.locator("#error")
    err.wait_for(state="visible", timeout=30_000)
    assert f"prompt budget of {budget} tokens" in err.inner_text()
    assert page.locator(".turn").count() == 0


@pytest.mark.real
def test_studio_page_stop_ends_the_steered_reply_and_leaves_no_hook(page, served):
    base, studio = served
    page.fill("#max-tokens", "300")
    page.select_option("#add-concept", "calm")
    page.click("#add")
    page.locator(".slider input[data-concept='calm']").fill("0.2")
    page.fill("#message", PROMPT)
    page.click("#steer")
    page.wait_for_function(
        "() => (document.querySelector('.reply.plain .streaming') || {}).textContent",
        timeout=60_000,
    )
    page.click("#stop")
    t0 = time.monotonic()
    page.locator("#error").wait_for(state="visible", timeout=10_000)
    assert "stopped" in page.inner_text("#error") and page.locator(".turn").count() == 0
    assert _idle(base, timeout=30)["hooks"] == 0
    assert time.monotonic() - t0 < 20, "the reply ran on after the page stopped it"
    assert all(not h.fwd_hooks for h in studio.model.hook_dict.values())


@pytest.mark.real
def test_studio_busy_model_answers_409_and_the_page_says_so(page, served):
    base, _ = served
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_new_tokens": 40}
    first = _post(base, body)
    assert first.status == 200
    first.readline(), first.readline()  # streaming now
    second = _post(base, body)
    assert second.status == 409 and "busy" in json.loads(second.read())["error"]
    page.fill("#message", "hello")
    page.click("#send")
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "busy" in page.inner_text("#error")
    rest = [json.loads(x) for x in first.read().decode().splitlines() if x.strip()]
    assert rest[-1]["event"] == "end"
    _idle(base)
    assert _post(base, {**body, "max_new_tokens": 2}).status == 200


# ---------------------------------------------------------------- the command
def test_studio_warns_when_listening_beyond_this_machine(caplog):
    from emosae.studio.server import warn_if_exposed

    with caplog.at_level(logging.WARNING, logger="emosae"):
        assert warn_if_exposed("127.0.0.1") is False
        assert not caplog.records
        assert warn_if_exposed("0.0.0.0") is True
    assert "0.0.0.0" in caplog.text and "127.0.0.1" in caplog.text


@pytest.mark.real
def test_studio_command_listens_on_127_0_0_1_within_a_minute(tmp_path):
    from emosae.cli.main import build_parser

    args = build_parser()[0].parse_args(["studio"])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    log = (tmp_path / "studio.log").open("w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emosae.cli", "studio", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        while time.monotonic() - t0 < 60:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "studio.log").read_text()
                time.sleep(0.25)
        took = time.monotonic() - t0
        assert took < 60, "not serving within a minute"
        with pytest.raises(OSError):  # another loopback address: not listening there
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    out = (tmp_path / "studio.log").read_text()
    assert f"http://127.0.0.1:{port}/" in out, out
    print(f"emosae studio served after {took:.1f} s")
