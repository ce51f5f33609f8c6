"""`python -m emosae.cli ...` = the `emosae` command."""

import sys

from emosae.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
