"""Build hook (all metadata is in pyproject.toml): a wheel carries the repository's
`checkpoints/` inside the package as `emosae/_checkpoints/`, so `load_directions()`
finds the shipped directions in any install, not only in an editable checkout."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithCheckpoints(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)
        if not editable:  # no stale modules from an earlier build in build/lib
            shutil.rmtree(Path(self.build_lib) / "emosae", ignore_errors=True)
        super().run()
        if editable:
            return  # an editable install reads checkpoints/ where it is
        src = ROOT / "checkpoints"
        if src.is_dir():
            shutil.copytree(
                src, Path(self.build_lib) / "emosae" / "_checkpoints", dirs_exist_ok=True
            )


setup(cmdclass={"build_py": BuildPyWithCheckpoints})
