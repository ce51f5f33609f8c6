import subprocess
import sys


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "emosae.cli", *args], capture_output=True, text=True
    )


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in (
        "models", "smoke", "run", "cache", "train", "probes", "labels", "compare", "steer",
        "read", "dashboard", "export",
    ):  # fmt: skip
        assert cmd in r.stdout


def test_models_names_default():
    r = run("models")
    assert r.returncode == 0 and "smollm2-135m-instruct (default)" in r.stdout


def test_bad_model_is_one_line_error():
    r = run("smoke", "--model", "no-such-model-xyz")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown model" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_subcommand_has_help():
    for cmd in (
        "run",
        "cache",
        "train",
        "probes",
        "labels",
        "compare",
        "steer",
        "read",
        "dashboard",
    ):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout, (cmd, r.stderr[-500:])


def test_run_rejects_unknown_preset_and_stage():
    r = run("run", "--preset", "huge")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("run", "--preset", "smoke", "--only", "nonsense", "--out", "/tmp/emosae-never-written")
    assert r.returncode == 2 and "unknown stage" in r.stderr and "Traceback" not in r.stderr


def test_labels_of_an_unknown_sae_is_one_line_error(tmp_path):
    out = tmp_path / "labels"
    r = run("labels", "--sae", "nosuchrelease/abc", "--out", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "nosuchrelease/abc: not an SAE folder, and sae-lens's registry cannot" in r.stderr
    r = run("labels", "--sae", str(tmp_path / "nothing-here"), "--out", str(out))
    assert r.returncode == 2 and "no such SAE folder" in r.stderr
    r = run("labels", "--sae", str(tmp_path))
    assert r.returncode == 2 and "--sae needs --out" in r.stderr
    assert not out.exists()


def test_layer_choice_refuses_sae_vectors_and_negative_strengths():
    r = run("steer", "--calibrate", "--emotion", "happy", "--layers", "5", "14", "--kind", "sae")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--layers chooses among probe layers" in r.stderr
    r = run("steer", "--calibrate", "--emotion", "happy", "--strengths", "-0.2", "0.2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "both signs are used" in r.stderr
