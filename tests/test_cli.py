import subprocess
import sys


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "emosae.cli", *args], capture_output=True, text=True
    )


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("models", "smoke"):
        assert cmd in r.stdout


def test_models_names_default():
    r = run("models")
    assert r.returncode == 0 and "smollm2-135m-instruct (default)" in r.stdout


def test_bad_model_is_one_line_error():
    r = run("smoke", "--model", "no-such-model-xyz")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown model" in r.stderr
    assert "Traceback" not in r.stderr
