"""`emosae steer`: generate with and without a steering vector, side by side; with
`--calibrate`, sweep the strength and print effect and coherence per strength."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.log import logger
from emosae.lm.chat import chat_reply, check_text
from emosae.lm.models import load_model
from emosae.steering.directions import load_directions
from emosae.steering.vector import check_strength


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
    c.add_argument(
        "--strengths", type=float, nargs="+", default=None, help="positive strengths searched"
    )
    c.add_argument("--n-prompts", type=int, default=None, help="calibration prompts")
    c.add_argument("--n-heldout", type=int, default=None, help="held-out prompts reported on")
    c.add_argument("--budget", type=float, default=None, help="max steered/unsteered perplexity")
    c.add_argument("--kl-budget", type=float, default=None, help="max per-token KL (nats)")
    c.add_argument("--save", action="store_true", help="keep the result in the directions folder")
    c.add_argument(
        "--layers", type=int, nargs="+", default=None, help="probe layers to choose among"
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
    with v.apply(model, strength):  # the positions it was calibrated on (from the reply)
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
        if s is not None:
            check_strength(s, name)
    if args.max_new_tokens < 1:
        raise EmosaeError(f"--max-new-tokens must be >= 1, not {args.max_new_tokens}")
    check_text(args.prompt, "--prompt")
    if not args.calibrate:  # a flag that would do nothing is refused, not ignored
        sweep = {"--layers": args.layers, "--save": args.save or None, "--budget": args.budget}
        sweep.update({"--strengths": args.strengths, "--n-prompts": args.n_prompts})
        sweep.update({"--n-heldout": args.n_heldout, "--kl-budget": args.kl_budget})
        unused = [f for f, v in sweep.items() if v is not None]
        if unused:
            raise EmosaeError(
                f"{unused[0]} only works with --calibrate; side by side steering uses the "
                "directions folder's layer and one --strength"
            )
    if args.calibrate and args.strength is not None:
        raise EmosaeError("--calibrate sweeps --strengths; --strength is for side by side steering")
    if args.layers and args.kind != "probe":
        raise EmosaeError("--layers chooses among probe layers (--kind probe); an SAE reads one")


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
    from emosae.steering.directions import steering_candidates

    cfg = CalibrationConfig(max_new_tokens=min(args.max_new_tokens, 16))
    for k, v in (
        ("strengths", tuple(args.strengths) if args.strengths else None),
        ("n_prompts", args.n_prompts),
        ("n_heldout", args.n_heldout),
        ("budget", args.budget),
        ("kl_budget", args.kl_budget),
    ):
        if v is not None:
            cfg = replace(cfg, **{k: v})
    target = _save_target(args.directions) if args.save else None
    cands = steering_candidates(args.directions, args.layers) if args.layers else {}
    model = load_model(args.model)
    cals = []
    for vec in vecs:
        cal = calibrate(vec, model, cfg=cfg, candidates=cands.get(vec.concept))
        cals.append(cal)
        print_calibration(vec, cal, cfg)
    if target is not None:
        print(f"\nsaved to {save_calibrations(target, {args.kind: cals}, cfg)}")


def print_calibration(vec: Any, cal: Any, cfg: Any) -> None:
    """The sweep at the chosen layer, the layers tried, and the held-out report."""
    budget = f"perplexity ratio <= {cfg.budget:g}"
    if cfg.kl_budget is not None:
        budget += f", KL <= {cfg.kl_budget:g} nats/token"
    print(f"\n{vec!r}  (budget: {budget}; at layer {cal.layer})")
    print(f"{'strength':>8} {'readout':>8} {'valence':>8} {'ppl x':>7} {'KL/tok':>7}  reply")
    for i, s in enumerate(cal.strengths):
        reply = cal.replies[str(s)].replace("\n", " ")[:56]
        print(
            f"{s:+8.3f} {cal.readout[i]:+8.2f} {cal.valence[i]:8.2f} {cal.ppl_ratio[i]:7.2f} "
            f"{cal.kl[i]:7.3f}  {reply}"
        )
    if len(cal.layers) > 1:
        tried = ", ".join(
            f"L{L} {'none' if c['recommended'] is None else format(c['recommended'], '+g')}"
            f" ({c['readout_shift']:+.2f})"
            for L, c in cal.layers.items()
        )
        print(f"layers tried (strength, readout shift): {tried}")
    rec = "none within budget" if cal.recommended is None else f"{cal.recommended:+g}"
    print(f"recommended: layer {cal.layer}, strength {rec}")
    h = cal.heldout
    if h:
        ro, su, va = h["readout_shift"], h["success"], h["valence_shift"]
        print(
            f"held out ({h['n_prompts']} prompts): readout +r vs 0 {_ci(ro)}; success "
            f"{su['k']}/{su['n']} [{su['ci95'][0]:.2f}, {su['ci95'][1]:.2f}]; valence +r - -r "
            f"{_ci(va)}; ppl x {h['ppl_ratio']['+r']:.2f} (+r) {h['ppl_ratio']['-r']:.2f} (-r)"
        )


def _ci(d: dict) -> str:
    ci = d.get("ci95")
    return f"{d['mean']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
