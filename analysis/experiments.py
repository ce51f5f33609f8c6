"""Run the behavioural experiments (and the report) of a finished run folder.

Thin wrapper: `python analysis/experiments.py --out runs/default` equals
`emosae run --only experiments report --out runs/default`.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--only", "experiments", "report", *sys.argv[1:]]))
