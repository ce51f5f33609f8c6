"""`emosae steer`: generate with and without a steering vector, side by side."""

from __future__ import annotations

import argparse
import math
import textwrap

from emosae.core.errors import EmosaeError
from emosae.lm.chat import chat_reply, render_chat
from emosae.lm.models import load_model
from emosae.steering.directions import load_directions


def steer_command(args: argparse.Namespace) -> None:
    if not math.isfinite(args.strength):
        raise EmosaeError(f"--strength must be a finite number, not {args.strength}")
    if args.max_new_tokens < 1:
        raise EmosaeError(f"--max-new-tokens must be >= 1, not {args.max_new_tokens}")
    vecs = load_directions(args.directions, kind=args.kind)
    if args.emotion not in vecs:
        raise EmosaeError(f"unknown emotion {args.emotion!r}; known: {', '.join(sorted(vecs))}")
    model = load_model(args.model)
    v = vecs[args.emotion]
    plain = chat_reply(model, args.prompt, max_new_tokens=args.max_new_tokens)
    start = len(render_chat(model, args.prompt).tokens) - 1
    with v.apply(model, args.strength, from_pos=start):
        steered = chat_reply(model, args.prompt, max_new_tokens=args.max_new_tokens)
    w = 48
    left = textwrap.wrap(plain, w) or [""]
    right = textwrap.wrap(steered, w) or [""]
    print(f"prompt: {args.prompt}\nvector: {v!r} strength {args.strength:+g} (relative)\n")
    print(f"{'unsteered':<{w}} | {args.emotion} {args.strength:+g}")
    print("-" * w + "-+-" + "-" * w)
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(f"{a:<{w}} | {b}")
