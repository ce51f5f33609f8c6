"""Train SAE(s) from an activation cache (flags: TrainConfig).

Thin wrapper: `python train/train_sae.py --help` equals `emosae train --help`; all logic lives in emosae/.
"""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
