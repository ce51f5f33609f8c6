"""Run the whole pipeline (same as `emosae run`).

Thin wrapper: `python analysis/run_pipeline.py --help` equals `emosae run --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
