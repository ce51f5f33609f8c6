"""Label SAE features of a run by story contrast.

Thin wrapper: `python analysis/label_features.py --help` equals `emosae labels --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["labels", *sys.argv[1:]]))
