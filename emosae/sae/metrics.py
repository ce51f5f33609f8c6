"""Standard SAE metrics on held-out cache rows: explained variance / FVU, L0, dead
features, and CE-loss recovered and KL with the SAE spliced into the model.

CE-loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE_zero replaces
the hooked residual with zeros and CE_sae with the SAE reconstruction (positions from
the cache's `skip_first` on; position 0 is left alone as in the cache).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from emosae.sae.reader import ActivationCache


@torch.no_grad()
def reconstruction_metrics(sae: Any, x: torch.Tensor, batch: int = 4096) -> dict[str, float]:
    sae.eval()
    dev = next(sae.parameters()).device
    se = torch.zeros((), dtype=torch.float64)
    l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    mean = x.mean(0)
    var = ((x - mean) ** 2).sum().double()
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(dev)
        f = sae.encode(xb)
        xh = sae.decode(f)
        se += ((xb - xh) ** 2).sum().double().cpu()
        act = (f != 0).cpu()
        l0 += act.sum().item()
        fired |= act.any(0)
    fvu = (se / var).item()
    return {
        "explained_variance": 1 - fvu,
        "fvu": fvu,
        "l0": l0 / len(x),
        "dead_fraction": 1 - fired.float().mean().item(),
        "n_eval_rows": len(x),
    }


def eval_contexts(cache: ActivationCache, n: int, eval_every: int) -> torch.Tensor:
    """Token ids of up to `n` held-out contexts, [n, context_len - skip_first]."""
    toks = cache.meta("tokens", "eval", eval_every)
    per = cache.manifest["context_len"] - cache.manifest["skip_first"]
    toks = toks[: len(toks) // per * per].view(-1, per)
    return toks[:n]


@torch.no_grad()
def splice_metrics(
    sae: Any, model: Any, hook: str, tokens: torch.Tensor, batch: int = 8
) -> dict[str, float]:
    dev = torch.device(model.cfg.device)
    sdev = next(sae.parameters()).device
    stop = None

    def recon(x, hook):
        y = x.clone()
        y[:, 1:] = sae.decode(sae.encode(x[:, 1:].to(sdev))).to(x.dtype).to(x.device)
        return y

    def zero(x, hook):
        y = x.clone()
        y[:, 1:] = 0
        return y

    tot = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    n = 0
    for i in range(0, len(tokens), batch):
        t = tokens[i : i + batch].to(dev)
        clean = model(t, return_type="logits", stop_at_layer=stop).float()
        with model.hooks(fwd_hooks=[(hook, recon)]):
            spl = model(t).float()
        with model.hooks(fwd_hooks=[(hook, zero)]):
            zer = model(t).float()
        tgt = t[:, 1:]

        def ce(lg, tgt=tgt):
            return F.cross_entropy(
                lg[:, :-1].reshape(-1, lg.shape[-1]), tgt.reshape(-1), reduction="sum"
            ).item()

        tot["clean"] += ce(clean)
        tot["sae"] += ce(spl)
        tot["zero"] += ce(zer)
        lp_c = clean[:, 1:].log_softmax(-1)
        lp_s = spl[:, 1:].log_softmax(-1)
        tot["kl"] += (lp_c.exp() * (lp_c - lp_s)).sum().item()
        n += tgt.numel()
    ce_clean, ce_sae, ce_zero = tot["clean"] / n, tot["sae"] / n, tot["zero"] / n
    return {
        "ce_clean": ce_clean,
        "ce_sae": ce_sae,
        "ce_zero_ablation": ce_zero,
        "ce_loss_recovered": (ce_zero - ce_sae) / (ce_zero - ce_clean),
        "kl_div": tot["kl"] / n,
        "n_ce_tokens": n,
    }


def evaluate_sae(
    sae: Any, cache: ActivationCache, hook: str, cfg: Any, model: Any = None
) -> dict[str, Any]:
    """All metrics for one SAE on the cache's held-out contexts."""
    from emosae.lm.models import load_model

    x = cache.rows(hook, "eval", cfg.eval_every)
    out: dict[str, Any] = {"hook": hook, **reconstruction_metrics(sae, x)}
    if cfg.eval_contexts > 0:
        dev = next(sae.parameters()).device  # under torchrun: this rank's GPU
        model = model if model is not None else load_model(cache.manifest["model"], device=dev)
        toks = eval_contexts(cache, cfg.eval_contexts, cfg.eval_every)
        out.update(splice_metrics(sae, model, hook, toks))
    return out
