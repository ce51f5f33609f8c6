"""Plumbing every other subpackage may use, and nothing else: the one error type
(`errors`), atomic writes and content hashes (`io`), the code version (`provenance`),
the `emosae` logger (`log`), the file names of every artifact folder and of a run folder
(`layout`), wandb tracking (`tracking`), joining a torchrun job (`distributed`) and the
one check for values a storage dtype cannot hold (`finite`).
It knows no model, no maths and no stage; it must not import from the subpackages above it.
"""
