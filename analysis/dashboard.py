"""Static feature pages (density, contexts, logit lens, AUROC, cosines) of a run's SAE.

Thin wrapper: `python analysis/dashboard.py --help` equals `emosae dashboard --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
