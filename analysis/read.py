"""Read concepts out of a prompt or text, token by token (and write a heatmap page).

Thin wrapper: `python analysis/read.py --help` equals `emosae read --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["read", *sys.argv[1:]]))
