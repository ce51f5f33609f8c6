"""Steering handles: the immutable `SteeringVector` with arithmetic and a hook that
always removes itself (`vector`), and loading probe or SAE directions from a run or the
shipped checkpoint as vectors (`directions`), checking the calibration files their
default strengths come from (`calibrations`), and llama.cpp export (`export`). Knows
nothing of training or stages, nor of measuring a steered reply
(`emosae.experiments.calibration` does that)."""
