"""Hook names are built and parsed in one place, with one error for a bad name."""

import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.lm.hooks import (
    block_layer,
    check_hooks,
    hook_layer,
    resid_hook,
    resid_hooks,
    right_pad,
    stop_layer,
)


def test_resid_hook_round_trip():
    for layer in (0, 7, 29):
        assert hook_layer(resid_hook(layer)) == layer == block_layer(resid_hook(layer))
    assert hook_layer("hook_embed") == 0 and block_layer("hook_embed") is None
    assert stop_layer([resid_hook(3), resid_hook(1)]) == 4


@pytest.mark.parametrize(
    "bad", ["blocks.x.hook_resid_post", "blocks.3", "resid", "", "blocks..hook"]
)
def test_malformed_names_give_the_same_error(bad):
    for fn in (hook_layer, block_layer):
        with pytest.raises(EmosaeError, match="malformed hook name"):
            fn(bad)


def test_hooks_checked_against_the_model(tiny_model):
    assert check_hooks(tiny_model, [resid_hook(2)]) == ["blocks.2.hook_resid_post"]
    assert resid_hooks(tiny_model, [2, 0, 2]) == [resid_hook(0), resid_hook(2)]
    with pytest.raises(EmosaeError, match=r"valid layers are 0\.\.2"):
        resid_hooks(tiny_model, [3])
    with pytest.raises(EmosaeError, match="unknown hook 'blocks.1.hook_nope'"):
        check_hooks(tiny_model, ["blocks.1.hook_nope"])
    with pytest.raises(EmosaeError, match="malformed hook name"):
        check_hooks(tiny_model, ["nonsense"])


@pytest.mark.kernel_paths
def test_right_pad_then_forward_equals_unpadded(tiny_model):
    seqs = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([1, 2])]
    toks = right_pad(seqs, pad=0)
    assert toks.tolist() == [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]]
    with torch.no_grad():
        batched = tiny_model(toks)
        alone = tiny_model(seqs[1][None])
    # padded against alone: batched = single within 1e-4, the reading promise (measured
    # 1e-6 on these logits at 1 and 2 threads: benchmarks/tolerance_noise.py)
    assert torch.allclose(batched[1, :2], alone[0], atol=1e-4)
