"""Validation on text emosae was not built from (`emosae validate`).

Owns the figures a user should believe: the probes' readout and the SAE labels scored on
an outside corpus (`emosae.data.outside`, never used to fit or choose anything), beside the
same figures on the bundled held-out stories, each with a bootstrap interval. `measures`
holds the pure statistics; `run` reads texts with a model and writes the folder. It reads
directions, labels and an SAE; it never changes them (labels that transfer are chosen by
`emosae.features`, from the per-label figures written here).
"""

from emosae.validation.run import ValidateJob, run_validate_job, validate

__all__ = ["ValidateJob", "run_validate_job", "validate"]
