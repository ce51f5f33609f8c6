"""Generate with and without an emotion steering vector, side by side.

Thin wrapper: `python analysis/steer.py --help` equals `emosae steer --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["steer", *sys.argv[1:]]))
