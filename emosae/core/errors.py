"""The one exception type emosae raises for bad input; the CLI prints it as one line."""


class EmosaeError(Exception):
    """A user-facing error whose message is a complete, single-line explanation."""
