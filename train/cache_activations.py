"""Cache residual activations (flags: CacheConfig).

Thin wrapper: `python train/cache_activations.py --help` equals `emosae cache --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["cache", *sys.argv[1:]]))
