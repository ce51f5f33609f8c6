"""Reading concepts out of text and conversations, token by token: `read` (centred
readings in readout units, at the paper's read position) and a static heatmap page of
a reading (`page`)."""

from emosae.reading.trace import Reading, read

__all__ = ["Reading", "read"]
