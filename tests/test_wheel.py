"""A built wheel carries the shipped directions: installed outside the source tree,
`load_directions()` finds them from any folder (issue: a non-editable install could
not). Builds without network (no build isolation), installs with --target."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_loads_shipped_directions(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run(build, check=True, capture_output=True, cwd=tmp_path)
    (whl,) = wheels.glob("emosae-*.whl")
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(whl)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import emosae; v = emosae.load_directions(); s = emosae.load_directions(kind='sae');"
        "from emosae.reading.trace import read_hook;"
        "print(emosae.__file__); print(len(v), len(s), read_hook(v['happy']))"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    where, counts = r.stdout.splitlines()
    assert Path(where).is_relative_to(target)  # the wheel's copy, not the checkout
    assert counts == "48 48 blocks.15.hook_resid_post"
