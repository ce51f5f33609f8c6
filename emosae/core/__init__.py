"""Plumbing every other subpackage may use, and nothing else: the one error type
(`errors`), atomic writes and content hashes (`io`), the code version (`provenance`),
the `emosae` logger (`log`), the file names of every artifact folder and of a run folder
(`layout`), wandb tracking (`tracking`) and joining a torchrun job (`distributed`).
It knows no model, no maths and no stage; it must not import from the subpackages above it.
"""
