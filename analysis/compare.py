"""Compare probe vectors and SAE features of a run.

Thin wrapper: `python analysis/compare.py --help` equals `emosae compare --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
