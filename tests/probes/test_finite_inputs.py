"""Probes and labels refuse story activations a dtype could not hold, with the cache's
one-line check (issue 31), and store Gemma-sized activations without overflow."""

import json

import pytest
import torch

from emosae.core import io
from emosae.core.errors import EmosaeError
from emosae.core.layout import ProbeFiles
from emosae.probes.reading import TextActs
from emosae.probes.vectors import _token_tensors, load_story_acts


def acts(scale):
    g = torch.Generator().manual_seed(0)
    per_story = [torch.randn(5, 8, generator=g) * scale, torch.randn(3, 8, generator=g) * scale]
    return TextActs(torch.zeros(2, 1, 8), per_story, [torch.arange(6), torch.arange(4)], None)


@pytest.mark.parametrize("scale, dtype", [(10.0, torch.float16), (1e5, torch.bfloat16)])
def test_story_tokens_are_stored_in_a_dtype_that_holds_them(scale, dtype):
    st = acts(scale)
    t = _token_tensors(st, skip=1)["story_token_acts"]
    assert t.dtype == dtype and torch.isfinite(t).all()
    want = torch.cat(st.tokens_acts)
    assert torch.allclose(t.float(), want, rtol=1e-2)  # float16 before: inf at 1e5


def test_probe_folder_with_inf_is_refused_in_one_line(tmp_path):
    files = ProbeFiles(tmp_path)
    t = _token_tensors(acts(10.0), skip=1)
    t["story_token_acts"][2, 3] = float("inf")
    io.save_tensors(files.story_acts, t, metadata={"emosae": json.dumps({"layers": [1]})})
    x = t["story_token_acts"]
    largest = float(x[torch.isfinite(x)].abs().max())
    with pytest.raises(EmosaeError) as e:
        load_story_acts(files)
    assert str(e.value) == (
        f"{files.story_acts}: story_token_acts has 1 non-finite value "
        f"(largest finite magnitude {largest:.6g}); rerun the probe stage"
    )
