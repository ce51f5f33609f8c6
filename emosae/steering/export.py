"""Steering vectors outside Python.

llama.cpp control vectors (`llama-cli --control-vector-scaled FILE S`): a GGUF of
architecture `controlvector` with one F32 tensor `direction.L` per layer and the keys
`controlvector.model_hint` and `controlvector.layer_count`. llama.cpp adds `direction.L`
to the output of block L (0-based) at every position, which is emosae's
`blocks.L.hook_resid_post`; block 0's output cannot be steered there (index 0 is
refused by its loader). Each tensor is the unit direction times the mean residual norm
at that layer, so llama.cpp's scale S equals emosae's relative strength S.

The portable format is `SteeringVector.save` (safetensors + json with model, hooks,
norms and the calibrated default strength).
"""

from __future__ import annotations

from pathlib import Path

from emosae.core import folders
from emosae.core.errors import EmosaeError
from emosae.lm.hooks import block_layer, resid_hook
from emosae.steering.vector import SteeringVector


def model_hint(model: str) -> str:
    """llama.cpp's architecture name of `model` (from the embedded GGUF when we have it)."""
    from emosae.lm.models import EMBEDDED

    spec = EMBEDDED.get(model)
    if spec is not None and spec.available():
        import gguf

        f = gguf.GGUFReader(str(spec.gguf_path())).fields["general.architecture"]
        return bytes(f.parts[f.data[0]]).decode()
    return model


def export_gguf(
    vec: SteeringVector, path: str | Path, hint: str | None = None, force: bool = False
) -> Path:
    """Write `vec` as a llama.cpp control vector (see the module docstring). An existing
    file at `path` must be one emosae wrote (`folders.check_output_file`), or `force`."""
    import gguf
    import numpy as np

    tensors = {}
    for hook, v in vec.vectors.items():
        layer = block_layer(hook)
        if layer is None or hook != resid_hook(layer) or layer < 1:
            raise EmosaeError(
                f"llama.cpp steers the residual stream after blocks 1..n-1; {hook} cannot be exported"
            )
        if hook not in vec.mean_norms:
            raise EmosaeError(f"no mean residual norm for {hook}: cannot set llama.cpp's scale")
        tensors[f"direction.{layer}"] = (v * vec.mean_norms[hook]).numpy().astype(np.float32)

    def write(tmp: Path) -> None:
        w = gguf.GGUFWriter(str(tmp), "controlvector")
        w.add_string("controlvector.model_hint", hint or model_hint(vec.model))
        w.add_uint32("controlvector.layer_count", len(tensors))
        for name, t in sorted(tensors.items()):
            w.add_tensor(name, t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    return folders.write_output(Path(path), write, force)
