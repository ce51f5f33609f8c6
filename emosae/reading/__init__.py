"""Reading concepts out of text and conversations, token by token: `read` (centred
readings in readout units, at the paper's read position), `read_many` (the same scores
for many records, batched: `batch`), whole files read resumably (`records`, `dataset`),
a static heatmap page of a reading (`page`) and the summary page of a dataset read
(`summary`). It reads with directions made elsewhere and never fits them."""

from emosae.reading.batch import read_many
from emosae.reading.trace import Reading, read

__all__ = ["Reading", "read", "read_many"]
