"""Where and in what units a steering vector's concept is read (`ReadoutRef`), kept
with the vector (see `emosae.reading` for the units)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emosae.core.errors import EmosaeError
from emosae.lm.hooks import hook_layer


def _private(t: Tensor | None, width: int, what: str) -> Tensor | None:
    if t is None:
        return None
    if t.shape != (width,) or not torch.isfinite(t).all():
        raise EmosaeError(f"{what} must be a finite [{width}] vector, got {tuple(t.shape)}")
    out = t.detach().float().cpu().clone()
    out.requires_grad_(False)
    return out


def _positive(x: Any, what: str) -> None:
    if x is not None and not (isinstance(x, int | float) and 0 < x < float("inf")):
        raise EmosaeError(f"{what} must be finite and positive, not {x!r}")


@dataclass(frozen=True, eq=False)
class ReadoutRef:
    """Where a direction is read from and in what units (see `emosae.reading`).

    Plain text: `(x - center) . unit / scale`, averaged from token `skip` on; `center` is
    the centre the probe was fitted against and `scale` the within-concept spread of
    story readings (shared by a folder's concepts, so rankings are the probe's).
    Conversations: `(x - chat_center) . unit / chat_scale`, a z-score against neutral
    prompts read at the same position (the token before the assistant's reply)."""

    center: Tensor
    scale: float
    skip: int = 0
    chat_center: Tensor | None = None
    chat_scale: float | None = None
    hook: str | None = None
    """Where the concept is read, when that is not where the vector steers (a vector
    calibrated to steer at another layer keeps the reading layer's readout)."""
    unit: Tensor | None = None
    """The direction read at `hook` (None: the vector's own direction)."""

    TENSORS = ("center", "chat_center", "unit")

    def check(self, width: int) -> None:
        for name in self.TENSORS:
            object.__setattr__(self, name, _private(getattr(self, name), width, name))
        if self.center is None:
            raise EmosaeError("a readout reference needs a centre")
        if (self.hook is None) != (self.unit is None):
            raise EmosaeError("a readout on its own hook needs both the hook and its direction")
        if self.hook is not None:
            hook_layer(self.hook)
            object.__setattr__(self, "unit", self.unit / self.unit.norm().clamp_min(1e-12))
        _positive(self.scale, "read scale")
        _positive(self.chat_scale, "chat read scale")
        if not (isinstance(self.skip, int) and self.skip >= 0):
            raise EmosaeError(f"read skip must be an integer >= 0, not {self.skip!r}")

    def to_json(self) -> dict[str, Any]:
        out = {"scale": self.scale, "skip": self.skip, "chat_scale": self.chat_scale}
        return {**out, "hook": self.hook} if self.hook else out

    def tensors(self) -> dict[str, Tensor]:
        return {
            f"__{n}__": getattr(self, n).contiguous()
            for n in self.TENSORS
            if getattr(self, n) is not None
        }

    @classmethod
    def from_saved(
        cls, meta: dict[str, Any] | None, tensors: dict[str, Tensor], where: Path
    ) -> ReadoutRef | None:
        """Pops the reference's tensors from `tensors` (a saved vector's file)."""
        saved = {n: tensors.pop(f"__{n}__", None) for n in cls.TENSORS}
        if meta is None:
            if any(v is not None for v in saved.values()):
                raise EmosaeError(f"{where}: readout tensors without a readout record")
            return None
        if saved["center"] is None:
            raise EmosaeError(f"{where}: the readout centre is missing")
        try:
            return cls(
                saved["center"],
                meta["scale"],
                meta["skip"],
                saved["chat_center"],
                meta["chat_scale"],
                meta.get("hook"),
                saved["unit"],
            )
        except (KeyError, TypeError):
            raise EmosaeError(f"{where}: malformed readout record {meta!r}") from None
