"""Activations that a storage dtype cannot hold: the one check that every stage runs on
the tensors it is given, and the rule that picks a storage dtype wide enough.

Models with massive activations (Gemma, many Llama-family models; Sun et al. 2024,
"Massive activations in large language models") have residual values beyond float16's
65504: stored as float16 they become inf, and every later stage trains or reads on
garbage. `check_finite` turns that into one line naming where, how many and how large;
`storage_dtype` picks float16 only with headroom, else bfloat16, else float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from emosae.core.errors import EmosaeError

HEADROOM = 8.0
"""A dtype is chosen only when the largest magnitude measured, times this, still fits:
the measurement is a sample (one batch), and the rarest massive activations of a model
are several times its typical ones."""

NARROW_FIRST = ("float16", "bfloat16", "float32")


def dtype_max(name: str) -> float:
    """Largest finite value of a torch float dtype by name."""
    return float(torch.finfo(getattr(torch, name)).max)


def storage_dtype(max_abs: float, headroom: float = HEADROOM) -> str:
    """The narrowest of float16, bfloat16, float32 that holds `max_abs` x `headroom`
    (float16 first: at the same width it keeps 3 more bits of precision than bfloat16).
    A headroom of 1 is for values that were all measured, not sampled."""
    for name in NARROW_FIRST[:-1]:
        if max_abs * headroom < dtype_max(name):
            return name
    return NARROW_FIRST[-1]


def max_abs(x: Tensor | np.ndarray) -> float:
    """Largest finite magnitude in `x` (0 when it has none)."""
    t = torch.as_tensor(x)
    t = t[torch.isfinite(t)]
    return float(t.abs().max()) if t.numel() else 0.0


def check_finite(
    x: Tensor | np.ndarray,
    where: str,
    *,
    largest: float | None = None,
    hint: str = "",
) -> None:
    """Raise one line if `x` holds inf or nan: `where`, how many, the largest magnitude
    seen (`largest` when the caller saw the values before they were stored, else the
    largest finite one in `x`), then `hint`. Costs one pass over `x`, no copy when clean."""
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        return
    bad = int((~torch.isfinite(t)).sum())
    if bad == 0:
        return
    seen = (
        f"largest magnitude seen {largest:.6g}"
        if largest is not None
        else f"largest finite magnitude {max_abs(t):.6g}"
    )
    raise EmosaeError(
        f"{where} has {bad} non-finite value{'s' * (bad != 1)} ({seen})"
        + (f"; {hint}" if hint else "")
    )
