"""`emosae steer`: generate with and without a steering vector, side by side; with
`--calibrate`, sweep the strength and print effect and coherence per strength."""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.log import logger
from emosae.lm.chat import chat_reply, check_text, render_chat
from emosae.lm.models import load_model
from emosae.steering.directions import load_directions
from emosae.steering.vector import MAX_STRENGTH


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    s = sub.add_parser("steer", help="generate with and without a concept steering vector")
    s.add_argument(
        "--concept",
        "--emotion",
        dest="concept",
        required=True,
        nargs="+",
        help="concept(s); `all` with --calibrate (--emotion: its old name)",
    )
    s.add_argument(
        "--strength",
        type=float,
        default=None,
        help="relative to the mean residual norm (default: the vector's calibrated strength)",
    )
    s.add_argument("--prompt", default="Tell me about your weekend.")
    s.add_argument("--kind", default="probe", choices=["probe", "sae"])
    s.add_argument("--directions", default=None, help="run or checkpoint folder (default: shipped)")
    s.add_argument("--max-new-tokens", type=int, default=60)
    s.add_argument("--model", default=None)
    c = s.add_argument_group("calibration")
    c.add_argument("--calibrate", action="store_true", help="sweep the strength instead")
    c.add_argument("--strengths", type=float, nargs="+", default=None)
    c.add_argument("--n-prompts", type=int, default=None, help="neutral prompts per strength")
    c.add_argument("--budget", type=float, default=None, help="max steered/unsteered perplexity")
    c.add_argument("--save", action="store_true", help="keep the result in the directions folder")
    c.add_argument(
        "--layers", type=int, nargs="+", default=None, help="sweep these probe layers instead"
    )
    return s


def steer_command(args: argparse.Namespace) -> None:
    _check_args(args)
    vecs = load_directions(args.directions, kind=args.kind)
    names = sorted(vecs) if args.concept == ["all"] else args.concept
    unknown = [e for e in names if e not in vecs]
    if unknown:
        raise EmosaeError(f"unknown concept {unknown[0]!r}; known: {', '.join(sorted(vecs))}")
    if args.calibrate:
        return _calibrate(args, [vecs[e] for e in names])
    if len(names) != 1:
        raise EmosaeError("side by side steering takes one --concept (or use --calibrate)")
    v = vecs[names[0]]
    if args.strength is None and v.default_strength is None:
        raise EmosaeError(
            f"{v.concept} has no calibrated strength here; pass --strength or run "
            f"`emosae steer --calibrate --concept {v.concept} --save`"
        )
    strength = args.strength if args.strength is not None else v.default_strength
    d = v.default_strength
    if d and abs(strength) > 10 * abs(d):
        logger.warning(
            "--strength %g is over ten times %s's calibrated %+g: expect broken replies",
            strength,
            v.concept,
            d,
        )
    model = load_model(args.model)
    plain = chat_reply(model, args.prompt, max_new_tokens=args.max_new_tokens)
    start = len(render_chat(model, args.prompt).tokens) - 1
    with v.apply(model, strength, from_pos=start):
        steered = chat_reply(model, args.prompt, max_new_tokens=args.max_new_tokens)
    w = 48
    left = textwrap.wrap(plain, w) or [""]
    right = textwrap.wrap(steered, w) or [""]
    how = "calibrated" if args.strength is None else "relative"
    print(f"prompt: {args.prompt}\nvector: {v!r} strength {strength:+g} ({how})\n")
    print(f"{'unsteered':<{w}} | {v.concept} {strength:+g}")
    print("-" * w + "-+-" + "-" * w)
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(f"{a:<{w}} | {b}")


def _check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before the directions or the model load."""
    for name, s in [
        ("--strength", args.strength),
        *(("--strengths", x) for x in args.strengths or []),
    ]:
        if s is not None and not math.isfinite(s):
            raise EmosaeError(f"{name} must be a finite number, not {s}")
        if s is not None and abs(s) > MAX_STRENGTH:
            raise EmosaeError(
                f"{name} {s:g} is beyond any sane strength: |s| <= {MAX_STRENGTH:g} (relative to "
                "the mean residual norm; calibrated strengths are 0.1-0.4)"
            )
    if args.max_new_tokens < 1:
        raise EmosaeError(f"--max-new-tokens must be >= 1, not {args.max_new_tokens}")
    check_text(args.prompt, "--prompt")
    if not args.calibrate:  # a flag that would do nothing is refused, not ignored
        sweep = {"--layers": args.layers, "--save": args.save or None, "--budget": args.budget}
        sweep.update({"--strengths": args.strengths, "--n-prompts": args.n_prompts})
        unused = [f for f, v in sweep.items() if v is not None]
        if unused:
            raise EmosaeError(
                f"{unused[0]} only works with --calibrate; side by side steering uses the "
                "directions folder's layer and one --strength"
            )
    if args.calibrate and args.strength is not None:
        raise EmosaeError("--calibrate sweeps --strengths; --strength is for side by side steering")
    if args.layers and (args.kind != "probe" or args.save):
        raise EmosaeError("--layers sweeps probe vectors (--kind probe) and is not saved")


def _save_target(directions: str | None) -> Any:
    """Where `--calibrate --save` writes: the run or checkpoint folder given, or, for the
    shipped directions (read-only to emosae), the user's calibration folder."""
    from emosae.core.layout import RunLayout, shipped_checkpoint, shipped_name, user_calibration

    root = Path(directions) if directions else shipped_checkpoint()
    name = shipped_name(root)
    if name is None:
        folders.check_claimable(RunLayout(root).calibrate.dir, "calibrate")
        return RunLayout(root)
    mine = user_calibration(name)
    folders.check_claimable(mine.calibrate.dir, "calibrate")
    io.check_creatable(mine.calibrate.dir)
    return mine


def _calibrate(args: argparse.Namespace, vecs: list) -> None:
    from dataclasses import replace

    from emosae.experiments.calibration import CalibrationConfig, calibrate, save_calibrations

    cfg = CalibrationConfig(max_new_tokens=min(args.max_new_tokens, 16))
    for k, v in (
        ("strengths", args.strengths),
        ("n_prompts", args.n_prompts),
        ("budget", args.budget),
    ):
        if v is not None:
            cfg = replace(cfg, **{k: tuple(v) if k == "strengths" else v})
    target = _save_target(args.directions) if args.save else None
    model = load_model(args.model)
    if args.layers:
        return _layer_sweep(args, cfg, model)
    cals = []
    for vec in vecs:
        cal = calibrate(vec, model, cfg=cfg)
        cals.append(cal)
        print(f"\n{vec!r}  (budget: perplexity ratio <= {cfg.budget:g})")
        print(
            f"{'strength':>8} {'readout':>8} {'valence':>8} {'ppl x':>7} {'KL':>7}  reply to the first prompt"
        )
        for i, s in enumerate(cal.strengths):
            reply = cal.replies[str(s)].replace("\n", " ")[:60]
            print(
                f"{s:+8.2f} {cal.readout[i]:+8.2f} {cal.valence[i]:8.2f} {cal.ppl_ratio[i]:7.2f} "
                f"{cal.kl[i]:7.3f}  {reply}"
            )
        rec = "none within budget" if cal.recommended is None else f"{cal.recommended:+g}"
        print(f"recommended strength: {rec}")
        sh = cal.valence_shift
        if sh:
            lo, hi = sh["ci95"]
            print(
                f"valence at +r minus -r: {sh['mean']:+.2f} [95% CI {lo:+.2f}, {hi:+.2f}] "
                f"over {sh['n']} prompts"
            )
    if target is not None:
        print(f"\nsaved to {save_calibrations(target, {args.kind: cals}, cfg)}")


def _layer_sweep(args: argparse.Namespace, cfg: Any, model: Any) -> None:
    """Calibrate each concept's probe vector at each of `--layers`; one row per layer: the
    recommended strength and, there, the effect (own readout, a z-score against neutral
    prompts at that layer, so comparable across layers; valence shift) and coherence."""
    from emosae.experiments.calibration import calibrate

    for emo in args.concept:
        print(f"\n{emo}: layer sweep (budget: perplexity ratio <= {cfg.budget:g})")
        print(f"{'layer':>5} {'rec.':>6} {'readout':>8} {'ppl x':>6}  valence +r - -r [95% CI]")
        for layer in args.layers:
            vec = load_directions(args.directions, kind="probe", layer=layer)[emo]
            cal = calibrate(vec, model, cfg=cfg)
            r = cal.recommended
            if r is None:
                print(f"{layer:5d} {'none':>6}")
                continue
            i, sh = cal.strengths.index(r), cal.valence_shift
            shift = (
                f"{sh['mean']:+.2f} [{sh['ci95'][0]:+.2f}, {sh['ci95'][1]:+.2f}]" if sh else "n/a"
            )
            print(f"{layer:5d} {r:+6.2f} {cal.readout[i]:+8.2f} {cal.ppl_ratio[i]:6.2f}  {shift}")
