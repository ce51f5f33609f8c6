"""`python -m emosae ...` (and `torchrun ... -m emosae ...`) = the `emosae` command."""

import sys

from emosae.cli import main

if __name__ == "__main__":
    sys.exit(main())
