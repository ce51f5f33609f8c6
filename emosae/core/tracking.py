"""wandb tracking: offline by default, online when the user configures it, and never
a reason for a job to fail (a failed init falls back to offline, then to disabled)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from emosae.core.log import logger


@dataclass(frozen=True)
class WandbConfig:
    """Where runs are logged."""

    mode: Literal["offline", "online", "disabled"] | None = None
    """None: $WANDB_MODE if set, else offline (sync later with `wandb sync <dir>`)."""
    project: str = "emosae"
    entity: str | None = None
    dir: str | None = None
    """Folder for the local wandb files (default: ./wandb)."""


def init_wandb(cfg: WandbConfig, name: str, config: dict[str, Any], job_type: str) -> Any:
    """Start a wandb run; returns the run, or None when tracking is disabled."""
    import wandb

    mode = cfg.mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    for m in dict.fromkeys([mode, "offline"]):
        try:
            return wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                name=name,
                config=config,
                mode=m,
                dir=cfg.dir,
                job_type=job_type,
                reinit="finish_previous",
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as e:  # noqa: BLE001 - any wandb failure must not stop training
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            logger.warning("wandb %s init failed (%s)", m, why)
    warnings.warn("wandb unavailable; continuing without tracking", stacklevel=2)
    return None


def finish(run: Any) -> None:
    if run is not None:
        try:
            run.finish()
        except Exception:  # noqa: BLE001
            pass
