"""Shared fixtures: a tiny random TransformerLens model for fast exact tests, and the
real default model (SmolLM2-135M-Instruct, loaded offline) for what only it can show."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# a developer's own calibrations (`emosae steer --calibrate --save` keeps them in
# $EMOSAE_HOME) must not change the strengths the tests see: an empty home per session
os.environ["EMOSAE_HOME"] = tempfile.mkdtemp(prefix="emosae-home-")


@pytest.fixture(scope="session")
def tiny_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        n_ctx=64,
        d_vocab=101,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        seed=0,
        device="cpu",
    )
    return HookedTransformer(cfg).eval()


@pytest.fixture(scope="session")
def real_model():
    from emosae.lm.models import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def layer15_probes(real_model, tmp_path_factory):
    """The probe stage exactly as the default preset runs it, at layer 15 only: its
    results and its folder."""
    from emosae.core.layout import ProbeFiles
    from emosae.probes.vectors import VectorsConfig, fit_vectors, read_stories

    cfg = VectorsConfig(layers=(15,))
    files = ProbeFiles(tmp_path_factory.mktemp("probes"))
    read_stories(cfg, real_model, 15, files)
    return fit_vectors(cfg, files), files.dir


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`emosae run --preset smoke` on the real default model, once per test session:
    (run folder, stdout)."""
    out = tmp_path_factory.mktemp("run") / "smoke"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "emosae.cli", "run", "--preset", "smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium: the real browser of the page tests (no browser download here)."""


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium driven by playwright, one per test module; the tests that need
    it are skipped where the Debian package is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: install the Debian package chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A fresh page and the list that its console errors and page errors go to."""
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page, errors
    page.close()


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model: what it refuses, it refuses first."""

    def load_model(*a, **k):
        raise AssertionError("the model loaded before the input was checked")

    monkeypatch.setattr("emosae.lm.models.load_model", load_model)
    monkeypatch.setattr("emosae.cli.steer.load_model", load_model)
