"""`emosae smoke`, a real smoke job: load a model, chat one reply, summarise its residual stream."""

from __future__ import annotations

import time

import torch

from emosae.lm.chat import chat_reply, render_chat
from emosae.lm.hooks import resid_hook
from emosae.lm.models import load_model


@torch.no_grad()
def smoke(
    model_name: str | None = None, prompt: str = "What is the capital of France?", device=None
) -> dict:
    """Print and return the reply and per-layer residual norms at the read position."""
    t0 = time.perf_counter()
    model = load_model(model_name, device=device)
    t_load = time.perf_counter() - t0
    print(
        f"model {model.cfg.model_name}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model} "
        f"(loaded in {t_load:.1f} s on {model.cfg.device})"
    )
    reply = chat_reply(model, prompt)
    print(f"user: {prompt}\nassistant: {reply}")
    chat = render_chat(model, prompt)
    names = [resid_hook(layer) for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(chat.tokens[None].to(model.cfg.device), names_filter=names)
    print(f"residual stream at the last token before the reply ({names[0]} .. {names[-1]}):")
    print(f"{'layer':>5} {'norm':>9} {'mean':>8} {'std':>8} {'max|x|':>8}")
    rows = []
    for layer, n in enumerate(names):
        x = cache[n][0, chat.read_pos].float()
        row = dict(
            layer=layer,
            norm=x.norm().item(),
            mean=x.mean().item(),
            std=x.std().item(),
            absmax=x.abs().max().item(),
        )
        rows.append(row)
        print(
            f"{layer:5d} {row['norm']:9.2f} {row['mean']:8.3f} {row['std']:8.3f} {row['absmax']:8.2f}"
        )
    return {"reply": reply, "resid": rows}
