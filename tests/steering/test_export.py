"""llama.cpp control-vector export reads back with the `gguf` package."""

import gguf
import numpy as np
import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.steering.export import export_gguf
from emosae.steering.vector import SteeringVector


def field(r, key):
    f = r.fields[key]
    return f.parts[f.data[0]]


def test_gguf_names_shapes_hint_and_scale(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = SteeringVector.from_direction(
        torch.randn(64, generator=g), "blocks.5.hook_resid_post", "calm", "probe", "m", 12.5
    )
    b = SteeringVector.from_direction(
        torch.randn(64, generator=g), "blocks.9.hook_resid_post", "calm", "probe", "m", 20.0
    )
    v = a + b
    p = export_gguf(v, tmp_path / "calm.gguf", hint="llama")
    r = gguf.GGUFReader(str(p))
    assert bytes(field(r, "general.architecture")).decode() == "controlvector"
    assert bytes(field(r, "controlvector.model_hint")).decode() == "llama"
    assert int(field(r, "controlvector.layer_count")[0]) == 2
    got = {t.name: np.array(t.data) for t in r.tensors}
    assert sorted(got) == ["direction.5", "direction.9"]
    assert all(
        t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [64] for t in r.tensors
    )
    # llama.cpp's scale S then equals emosae's relative strength S
    assert np.allclose(got["direction.5"], (a.direction * 12.5).numpy(), atol=1e-6)
    assert np.allclose(got["direction.9"], (b.direction * 20.0).numpy(), atol=1e-6)


def test_layer_zero_and_other_hooks_cannot_be_exported(tmp_path):
    for hook in ("blocks.0.hook_resid_post", "blocks.3.hook_resid_mid", "hook_embed"):
        v = SteeringVector.from_direction(torch.ones(8), hook, "x", "probe", "m", 1.0)
        with pytest.raises(EmosaeError, match="cannot be exported"):
            export_gguf(v, tmp_path / "x.gguf", hint="llama")
    assert not list(tmp_path.iterdir())


@pytest.mark.real
def test_shipped_vector_exports_with_the_models_architecture(tmp_path):
    from emosae.steering.directions import load_directions

    calm = load_directions()["calm"]  # at the layer its calibration chose to steer at
    p = export_gguf(calm, tmp_path / "calm.gguf")
    r = gguf.GGUFReader(str(p))
    assert bytes(field(r, "controlvector.model_hint")).decode() == "llama"
    assert [(t.name, list(t.shape)) for t in r.tensors] == [(f"direction.{calm.layer}", [576])]
    for layer in (8, 20):  # and a probe vector of any other layer
        v = load_directions(layer=layer)["calm"]
        r = gguf.GGUFReader(str(export_gguf(v, tmp_path / f"calm{layer}.gguf")))
        got = np.asarray(r.tensors[0].data)
        assert r.tensors[0].name == f"direction.{layer}"
        assert np.allclose(got, (v.direction * v.mean_norms[v.hook_name]).numpy(), atol=1e-5)
