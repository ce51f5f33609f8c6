"""Fit and validate emotion vectors per layer (flags: VectorsConfig).

Thin wrapper: `python analysis/fit_probes.py --help` equals `emosae probes --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["probes", *sys.argv[1:]]))
