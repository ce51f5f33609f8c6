"""Steering handles: immutable concept directions that add themselves to the residual
stream through TransformerLens hooks.

Strength convention (the emotions paper's): with `relative=True` (default) the added
vector is `strength * mean_resid_norm[hook] * direction`, so strength 0.1 adds a tenth
of a typical residual vector at that layer; with `relative=False` it is
`strength * direction`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from emosae.core import compat, folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import vector_files
from emosae.core.log import logger
from emosae.lm.hooks import block_layer, hook_layer
from emosae.steering.readout_ref import ReadoutRef

Positions = Literal["reply", "all"]
POSITIONS = get_args(Positions)

_LEVELS = itertools.count(1_000_000)  # private hook levels, so removal touches only ours

MAX_STRENGTH = 4.0
"""The largest relative strength the CLI and calibration accept. A relative strength s
adds s times the mean residual norm, so 1 already doubles the typical residual vector;
the shipped calibrations recommend 0.2-0.4, and at 0.4 steered replies are 2-4 times as
perplexing as unsteered ones. 4 is ten times the largest calibrated strength: beyond it
the model only emits noise or nothing (1e30 gives an empty reply), never a stronger
emotion."""


def check_strength(s: Any, what: str) -> float:
    """`s` as a float if it is a finite number with |s| <= `MAX_STRENGTH`, else a
    one-line error naming `what`: the bound of the command line and of calibration files."""
    if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
        raise EmosaeError(f"{what} must be a finite number, not {s!r:.40}")
    if abs(s) > MAX_STRENGTH:
        raise EmosaeError(
            f"{what} {s:g} is beyond any sane strength: |s| <= {MAX_STRENGTH:g} (relative to "
            "the mean residual norm; calibrated strengths are 0.1-0.4)"
        )
    return float(s)


def _frozen(m: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A concept direction on one or more hooks, with provenance. Immutable: every
    operation returns a new vector, and stored tensors are private copies.

    Loaded and freshly built vectors are unit-norm per hook; arithmetic results are
    not renormalised (`0.5 * calm` has norm 0.5, `joy - sad` is a plain difference) and
    carry no default strength and no readout reference."""

    vectors: Mapping[str, Tensor]
    """hook name -> [d_model] direction added at that hook."""
    concept: str
    """Concept name (an emotion, for the bundled set), or an expression such as
    "(happy - sad)"."""
    source: str
    """Where it came from: "probe:diffmean", "probe:logistic", "sae:<feature id>", or an expression."""
    model: str
    """Model the direction belongs to."""
    mean_norms: Mapping[str, float] = field(default_factory=dict)
    """hook name -> mean residual-stream norm there (for relative strength)."""
    default_strength: float | None = None
    """The calibrated relative strength `apply` uses when given none (see
    `emosae.experiments.calibration`); None for an uncalibrated vector or a combination."""
    readout: ReadoutRef | None = None
    """Where and in what units `emosae.read` reads this direction (probe folders record
    it); None for a combination or a bare direction."""
    positions: Positions = "reply"
    """Where `apply` steers by default, as calibration measured it: "reply" steers the
    last prompt token and every token generated after it (the reply); "all" steers
    every position, the prompt included."""

    def __post_init__(self):
        vecs = {}
        for h, v in self.vectors.items():
            hook_layer(h)  # one-line error for a malformed hook name
            if v.ndim != 1:
                raise EmosaeError(
                    f"steering direction for {h} must be 1-D [d_model], got {tuple(v.shape)}"
                )
            if not torch.isfinite(v).all():
                raise EmosaeError(f"steering direction for {h} has non-finite values")
            t = v.detach().float().cpu().clone()
            t.requires_grad_(False)
            vecs[h] = t
        if not vecs:
            raise EmosaeError("a steering vector needs at least one hook")
        if len({v.shape[0] for v in vecs.values()}) > 1:
            raise EmosaeError("all directions of a steering vector must have the same width")
        if self.readout is not None:
            self.readout.check(next(iter(vecs.values())).shape[0])
        if self.positions not in POSITIONS:
            raise EmosaeError(f"positions must be one of {POSITIONS}, not {self.positions!r}")
        ds = self.default_strength
        if ds is not None and not (isinstance(ds, int | float) and math.isfinite(ds)):
            raise EmosaeError(f"default_strength must be a finite number or None, not {ds!r}")
        for h, n in self.mean_norms.items():
            if not (isinstance(n, int | float) and 0 < n < float("inf")):
                raise EmosaeError(
                    f"mean residual norm of {h} must be finite and positive, not {n!r}"
                )
        object.__setattr__(self, "vectors", _frozen(vecs))
        object.__setattr__(
            self, "mean_norms", _frozen({k: float(v) for k, v in self.mean_norms.items()})
        )

    def with_readout(self, ref: ReadoutRef | None) -> SteeringVector:
        """The same vector carrying a readout reference (a new vector)."""
        return replace(self, readout=ref)

    @classmethod
    def from_direction(
        cls,
        direction: Tensor,
        hook_name: str,
        concept: str,
        source: str,
        model: str,
        mean_norm: float | None = None,
    ) -> SteeringVector:
        """A unit-norm vector on one hook."""
        d = direction.detach().float()
        return cls(
            {hook_name: d / d.norm().clamp_min(1e-12)},
            concept,
            source,
            model,
            {hook_name: mean_norm} if mean_norm is not None else {},
        )

    # ---------------------------------------------------------------- accessors
    @property
    def emotion(self) -> str:
        """Deprecated name of `concept`."""
        compat.deprecated("SteeringVector.emotion", "SteeringVector.concept")
        return self.concept

    @property
    def hook_name(self) -> str:
        if len(self.vectors) != 1:
            raise EmosaeError(f"this vector spans {len(self.vectors)} hooks; use .vectors")
        return next(iter(self.vectors))

    @property
    def direction(self) -> Tensor:
        """The [d_model] direction (a copy) of a single-hook vector; unit-norm unless scaled by arithmetic."""
        return self.vectors[self.hook_name].clone()

    @property
    def layer(self) -> int | None:
        return block_layer(self.hook_name)

    # ---------------------------------------------------------------- arithmetic
    def _combine(self, other: SteeringVector, sign: float, op: str) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.model != self.model:
            raise EmosaeError(
                f"cannot combine vectors of different models ({self.model} vs {other.model})"
            )
        vecs = dict(self.vectors)
        for h, v in other.vectors.items():
            vecs[h] = vecs[h] + sign * v if h in vecs else sign * v
        norms = {**other.mean_norms, **self.mean_norms}
        return SteeringVector(
            vecs,
            f"({self.concept} {op} {other.concept})",
            f"({self.source} {op} {other.source})",
            self.model,
            norms,
            positions=self.positions,
        )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0, "+")

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0, "-")

    def __mul__(self, c: float) -> SteeringVector:
        if not isinstance(c, (int, float)):
            return NotImplemented
        return SteeringVector(
            {h: c * v for h, v in self.vectors.items()},
            f"{c:g}*{self.concept}",
            self.source,
            self.model,
            self.mean_norms,
            positions=self.positions,
        )

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __repr__(self) -> str:
        hooks = ", ".join(self.vectors)
        return f"SteeringVector({self.concept!r}, source={self.source!r}, hooks=[{hooks}], model={self.model!r})"

    # ---------------------------------------------------------------- hooks
    def scaled(self, hook: str, strength: float, relative: bool) -> Tensor:
        if not math.isfinite(strength):
            raise EmosaeError(f"strength must be a finite number, not {strength!r}")
        if not relative:
            return strength * self.vectors[hook]
        if hook not in self.mean_norms:
            raise EmosaeError(f"no mean residual norm recorded for {hook}; use relative=False")
        return strength * self.mean_norms[hook] * self.vectors[hook]

    def with_default_strength(self, strength: float | None) -> SteeringVector:
        """The same vector carrying `strength` as its default (a new vector)."""
        return replace(self, default_strength=strength)

    @contextmanager
    def apply(
        self,
        model: Any,
        strength: float | Sequence[float] | None = None,
        *,
        relative: bool = True,
        positions: Positions | None = None,
        from_pos: int | None = None,
        to_pos: int | None = None,
    ) -> Iterator[Any]:
        """Add the vector while the block runs (forward passes and `model.generate`,
        with or without its KV cache). Other hooks on the model are untouched; ours are
        removed on exit, also when the body raises.

        Where: `positions` (default: the vector's own, "reply", as calibration measured
        it) or explicit token positions `from_pos` up to (not including) `to_pos`. A
        forward over more than one token starts a new sequence; single-token forwards
        (KV-cache decoding) continue it. "reply" steers the last token of the sequence's
        first forward (the last prompt token, which predicts the reply's first token) and
        every later decoded token: exactly the reply, when generating with a KV cache
        (`chat_reply`, `model.generate`). A forward over a whole prompt + reply steers
        only its last token in "reply" mode; pass `from_pos` there.

        How much: `strength` (default: the calibrated `default_strength`), or one
        strength per batch row (a sequence as long as the batch)."""
        strength = self._strength(strength, relative)
        pos = positions or self.positions
        if pos not in POSITIONS:
            raise EmosaeError(f"positions must be one of {POSITIONS}, not {pos!r}")
        self._check_fits(model, max(strength, key=abs))
        rows = torch.tensor(strength, dtype=torch.float32).reshape(-1, 1, 1)
        unit = {h: self.scaled(h, 1.0, relative) for h in self.vectors}
        seen: dict[str, tuple[int, int]] = {}  # hook -> (tokens seen, first steered)
        level = next(_LEVELS)

        def make(h: str):
            def hook(x: Tensor, hook: Any) -> Tensor:
                n = x.shape[1]
                if n > 1 or h not in seen:
                    anchor = from_pos if from_pos is not None else 0
                    if from_pos is None and pos == "reply":
                        anchor = n - 1
                    seen[h] = (0, anchor)
                start, anchor = seen[h]
                seen[h] = (start + n, anchor)
                first = max(anchor - start, 0)
                last = n if to_pos is None else min(max(to_pos - start, 0), n)
                if first >= last or not rows.any():
                    return x
                if len(rows) not in (1, x.shape[0]):
                    raise EmosaeError(
                        f"{len(rows)} strengths for a batch of {x.shape[0]} sequences"
                    )
                add = (rows * unit[h]).to(device=x.device, dtype=x.dtype)
                x = x.clone()
                x[:, first:last] += add
                return x

            return hook

        for h in self.vectors:
            model.hook_dict[h].add_hook(make(h), dir="fwd", level=level)
        try:
            yield model
        finally:
            for h in self.vectors:
                model.hook_dict[h].remove_hooks("fwd", level=level)

    def _strength(self, strength: float | Sequence[float] | None, relative: bool) -> list[float]:
        """The strength(s) to add, as a list (one, or one per batch row), checked."""
        if strength is None:
            if self.default_strength is None:
                raise EmosaeError(
                    f"{self.concept} ({self.source}) has no calibrated default strength; pass "
                    "strength=..., or calibrate it: "
                    "vec.with_default_strength(emosae.calibrate(vec, model).recommended)"
                )
            strength = self.default_strength
        out = [strength] if isinstance(strength, int | float) else list(strength)
        if not out or not all(isinstance(s, int | float) and math.isfinite(s) for s in out):
            raise EmosaeError(f"strength must be a finite number, not {strength!r}")
        if relative and any(abs(s) > MAX_STRENGTH for s in out):
            logger.warning(
                "strength %g is beyond any sane strength (|s| <= %g); expect noise, not %s",
                max(out, key=abs),
                MAX_STRENGTH,
                self.concept,
            )
        return [float(s) for s in out]

    @property
    def d_model(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    def _check_fits(self, model: Any, strength: float) -> None:
        """Refuse a non-finite strength, a missing hook or another width; warn (and go on)
        when the model's name differs from the one the vector was made for: a fine-tune
        or a renamed copy of the same model is a legitimate target."""
        if not math.isfinite(strength):
            raise EmosaeError(f"strength must be a finite number, not {strength!r}")
        if self.d_model != model.cfg.d_model:
            raise EmosaeError(
                f"this vector is {self.d_model}-dimensional ({self.model}) but the model's "
                f"d_model is {model.cfg.d_model}"
            )
        for h in self.vectors:
            if h not in model.hook_dict:
                raise EmosaeError(f"model has no hook {h!r}")
        if getattr(model.cfg, "model_name", self.model) != self.model:
            logger.warning(
                "steering %s with a vector made for %s", model.cfg.model_name, self.model
            )

    # ---------------------------------------------------------------- io
    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write `<path>.safetensors` + `<path>.json` (temp names, then rename). Either
        file, if it exists, must be one emosae wrote (`folders.check_output_file`), or
        `force`; both are checked before either is written."""
        path = Path(path)
        st, js = vector_files(path)
        for p in (st, js):
            folders.check_output_file(p, force)
        meta = {
            "concept": self.concept,
            "source": self.source,
            "model": self.model,
            "mean_norms": dict(self.mean_norms),
            "hooks": list(self.vectors),
            "norms": {h: float(v.norm()) for h, v in self.vectors.items()},
            "default_strength": self.default_strength,
            "positions": self.positions,
            "readout": self.readout.to_json() if self.readout else None,
        }
        tensors = {h: v.contiguous() for h, v in self.vectors.items()}
        tensors.update(self.readout.tensors() if self.readout else {})
        from safetensors.torch import save_file

        folders.write_output(st, lambda t: save_file(tensors, str(t)), force)
        folders.write_output_text(js, json.dumps(meta, indent=1, default=float), force)
        return st

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        path = Path(path)
        st, js = vector_files(path)
        if not st.exists() or not js.exists():
            raise EmosaeError(f"no steering vector at {path} (need {st.name} and {js.name})")
        meta, tensors = io.read_json(js), io.load_tensors(st)
        ref = ReadoutRef.from_saved(meta.get("readout"), tensors, st)
        try:
            hooks, norms = list(meta["hooks"]), meta.get("norms", {})
            name = compat.key(meta, "concept", "emotion")
            args = (name, meta["source"], meta["model"], meta.get("mean_norms", {}))
            args += (meta.get("default_strength"), ref, meta.get("positions", "reply"))
        except (KeyError, TypeError):
            raise EmosaeError(f"{js} lacks concept, source, model or hooks") from None
        if sorted(tensors) != sorted(hooks):
            raise EmosaeError(
                f"{st} holds tensors {sorted(tensors)} but {js.name} lists hooks {sorted(hooks)}"
            )
        vec = cls(tensors, *args)
        for h, n in norms.items():
            if h not in vec.vectors or abs(float(vec.vectors[h].norm()) - n) > 1e-4 * max(1.0, n):
                raise EmosaeError(f"{st}: the direction for {h} does not have its recorded norm")
        return vec
