import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.steering.vector import SteeringVector

H1, H2 = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"


def vec(hook=H1, concept="calm", seed=0, d=32, norm=10.0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.from_direction(
        torch.randn(d, generator=g), hook, concept, "probe:diffmean", "tiny", norm
    )


def resid(model, toks):
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_resid_post"))
    return {k: v.clone() for k, v in cache.items()}


def test_direction_is_unit_and_immutable():
    v = vec()
    assert torch.allclose(v.direction.norm(), torch.tensor(1.0))
    d = v.direction
    d += 100
    assert torch.allclose(v.direction.norm(), torch.tensor(1.0))
    with pytest.raises(TypeError):
        v.vectors[H1] = torch.zeros(32)
    with pytest.raises(AttributeError):
        v.concept = "x"


def test_arithmetic():
    a, b = vec(seed=1, concept="happy"), vec(seed=2, concept="sad")
    assert torch.allclose((a - b).direction, a.direction - b.direction)
    assert torch.allclose((0.5 * a).direction, 0.5 * a.direction)
    assert torch.allclose((a * 2).direction, 2 * a.direction)
    assert torch.allclose((-a).direction, -a.direction)
    assert (a - b).concept == "(happy - sad)"
    c = vec(hook=H2, seed=3)
    s = a + c
    assert set(s.vectors) == {H1, H2}
    assert torch.equal(s.vectors[H1], a.direction) and torch.equal(s.vectors[H2], c.direction)
    with pytest.raises(EmosaeError):
        _ = s.direction


def test_hook_changes_only_its_layer_and_from_its_layer_on(tiny_model):
    toks = torch.randint(0, 100, (2, 7))
    clean = resid(tiny_model, toks)
    v = vec(hook=H1)
    with v.apply(tiny_model, 0.5, positions="all"):
        steered = resid(tiny_model, toks)
    assert torch.equal(steered["blocks.0.hook_resid_post"], clean["blocks.0.hook_resid_post"])
    # At the steered hook, exactly the scaled vector was added at every position.
    added = steered[H1] - clean[H1]
    assert torch.allclose(added, (0.5 * 10.0 * v.direction).expand_as(added), atol=1e-5)
    assert not torch.allclose(steered[H2], clean[H2])


def test_from_pos_leaves_earlier_positions(tiny_model):
    toks = torch.randint(0, 100, (1, 8))
    clean = resid(tiny_model, toks)
    with vec().apply(tiny_model, 1.0, from_pos=5):
        st = resid(tiny_model, toks)
    assert torch.equal(st[H2][:, :5], clean[H2][:, :5])
    assert not torch.allclose(st[H2][:, 5:], clean[H2][:, 5:])


def test_strength_zero_is_exact_noop(tiny_model):
    toks = torch.randint(0, 100, (2, 6))
    clean = tiny_model(toks)
    with vec().apply(tiny_model, 0.0):
        assert torch.equal(tiny_model(toks), clean)


def test_hook_removed_after_block_even_on_error(tiny_model):
    toks = torch.randint(0, 100, (1, 5))
    clean = tiny_model(toks)
    with pytest.raises(RuntimeError, match="boom"), vec().apply(tiny_model, 3.0, positions="all"):
        assert not torch.allclose(tiny_model(toks), clean)
        raise RuntimeError("boom")
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())
    assert torch.equal(tiny_model(toks), clean)


def test_generate_with_kv_cache_matches_full_recompute(tiny_model):
    toks = torch.randint(0, 100, (1, 6))
    v = vec()
    with v.apply(tiny_model, 2.0, from_pos=3):
        a = tiny_model.generate(
            toks,
            max_new_tokens=5,
            do_sample=False,
            use_past_kv_cache=True,
            verbose=False,
            stop_at_eos=False,
        )
        b = tiny_model.generate(
            toks,
            max_new_tokens=5,
            do_sample=False,
            use_past_kv_cache=False,
            verbose=False,
            stop_at_eos=False,
        )
    plain = tiny_model.generate(
        toks, max_new_tokens=5, do_sample=False, verbose=False, stop_at_eos=False
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, plain)


def test_absolute_strength_and_missing_norm(tiny_model):
    v = SteeringVector.from_direction(torch.ones(32), H1, "calm", "probe", "tiny")
    with pytest.raises(EmosaeError, match="relative=False"), v.apply(tiny_model, 1.0):
        pass
    toks = torch.randint(0, 100, (1, 4))
    clean = resid(tiny_model, toks)
    with v.apply(tiny_model, 3.0, relative=False, positions="all"):
        st = resid(tiny_model, toks)
    assert torch.allclose(st[H1] - clean[H1], 3.0 * v.direction.expand(1, 4, 32), atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    v = vec(seed=4) - 0.5 * vec(hook=H2, seed=5)
    v.save(tmp_path / "v")
    w = SteeringVector.load(tmp_path / "v")
    assert w.concept == v.concept and w.source == v.source and w.model == v.model
    assert dict(w.mean_norms) == dict(v.mean_norms)
    for h in v.vectors:
        assert torch.equal(w.vectors[h], v.vectors[h])
    with pytest.raises(EmosaeError, match="no steering vector"):
        SteeringVector.load(tmp_path / "nope")


def test_to_pos_bounds_the_window(tiny_model):
    toks = torch.randint(0, 100, (1, 9))
    clean = resid(tiny_model, toks)
    v = vec()
    with v.apply(tiny_model, 1.0, from_pos=2, to_pos=5):
        st = resid(tiny_model, toks)
    added = st[H1] - clean[H1]
    assert torch.equal(added[:, :2], torch.zeros_like(added[:, :2]))
    assert torch.equal(added[:, 5:], torch.zeros_like(added[:, 5:]))
    assert torch.allclose(added[:, 2:5], (10.0 * v.direction).expand(1, 3, 32), atol=1e-5)


def test_other_hooks_survive(tiny_model):
    toks = torch.randint(0, 100, (1, 5))

    def double(x, hook):
        return 2 * x

    with tiny_model.hooks(fwd_hooks=[(H2, double)]):
        with_other = tiny_model(toks)
        with vec().apply(tiny_model, 1.0):
            pass
        assert torch.equal(tiny_model(toks), with_other)


def test_default_strength_is_used_when_none_is_given(tiny_model):
    toks = torch.tensor([[1, 2, 3, 4]])
    plain = vec()
    with (
        pytest.raises(EmosaeError, match="no calibrated default strength"),
        plain.apply(tiny_model),
    ):
        pass
    cal = plain.with_default_strength(0.3)
    assert plain.default_strength is None and cal.default_strength == 0.3  # a new vector
    with cal.apply(tiny_model):
        a = resid(tiny_model, toks)
    with plain.apply(tiny_model, 0.3):
        b = resid(tiny_model, toks)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (cal + vec(seed=1)).default_strength is None  # combinations are not calibrated
    assert (2 * cal).default_strength is None


def test_default_strength_survives_save_and_load(tmp_path):
    v = vec().with_default_strength(-0.25)
    v.save(tmp_path / "v")
    assert SteeringVector.load(tmp_path / "v").default_strength == -0.25
    with pytest.raises(EmosaeError, match="finite number or None"):
        vec().with_default_strength(float("nan"))


def test_readout_reference_survives_save_and_load_and_is_checked(tmp_path):
    from safetensors.torch import load_file, save_file

    from emosae.steering.vector import ReadoutRef

    c = torch.arange(32.0)
    ref = ReadoutRef(c, 2.5, 20, -c, 0.75)
    v = vec().with_readout(ref).with_default_strength(0.2)
    c += 1  # the vector holds its own copy
    assert torch.equal(v.readout.center, torch.arange(32.0))
    v.save(tmp_path / "v")
    w = SteeringVector.load(tmp_path / "v")
    r = w.readout
    assert torch.equal(r.center, torch.arange(32.0)) and torch.equal(
        r.chat_center, -torch.arange(32.0)
    )
    assert (r.scale, r.skip, r.chat_scale, w.default_strength) == (2.5, 20, 0.75, 0.2)
    assert (v + vec(seed=1)).readout is None  # combinations carry no reference
    # a file whose centre was removed is refused, not read uncentred
    st = tmp_path / "v.safetensors"
    t = load_file(str(st))
    del t["__center__"]
    save_file(t, str(st))
    with pytest.raises(EmosaeError, match="readout centre is missing"):
        SteeringVector.load(tmp_path / "v")
    with pytest.raises(EmosaeError, match=r"center must be a finite \[32\] vector"):
        vec().with_readout(ReadoutRef(torch.zeros(31), 1.0))
    with pytest.raises(EmosaeError, match="read scale must be finite and positive"):
        vec().with_readout(ReadoutRef(torch.zeros(32), 0.0))


def test_old_emotion_names_still_read_with_a_warning(tmp_path):
    """emosae 0.1 said "emotion": the attribute still answers (with a DeprecationWarning
    naming `concept`), and a vector file saved under the old key loads."""
    import json

    from emosae.data import load_stories

    v = vec(concept="calm")
    with pytest.warns(DeprecationWarning, match="SteeringVector.concept"):
        assert v.emotion == "calm"
    s = load_stories()[0]
    with pytest.warns(DeprecationWarning, match="Story.concept"):
        assert s.emotion == s.concept
    st = v.save(tmp_path / "calm")
    js = st.with_suffix(".json")
    meta = json.loads(js.read_text())
    assert meta["concept"] == "calm" and "emotion" not in meta
    meta["emotion"] = meta.pop("concept")
    js.write_text(json.dumps(meta))
    assert SteeringVector.load(tmp_path / "calm").concept == "calm"


def test_reply_positions_steer_the_last_prompt_token_and_what_is_decoded(tiny_model):
    """The default ("reply"): a new sequence is steered at its last token only, and
    every token decoded after it with the KV cache; the same as from_pos=len(prompt)-1."""
    toks = torch.randint(0, 100, (1, 7))
    clean = resid(tiny_model, toks)
    v = vec()
    assert v.positions == "reply"
    with v.apply(tiny_model, 1.0):
        st = resid(tiny_model, toks)
    added = st[H1] - clean[H1]
    assert torch.equal(added[:, :6], torch.zeros_like(added[:, :6]))
    assert torch.allclose(added[:, 6], 10.0 * v.direction[None], atol=1e-5)
    gen = dict(max_new_tokens=5, do_sample=False, verbose=False, stop_at_eos=False)
    with v.apply(tiny_model, 2.0):
        a = tiny_model.generate(toks, use_past_kv_cache=True, **gen)
    with v.apply(tiny_model, 2.0, from_pos=6):
        b = tiny_model.generate(toks, use_past_kv_cache=True, **gen)
    plain = tiny_model.generate(toks, use_past_kv_cache=True, **gen)
    assert torch.equal(a, b) and not torch.equal(a, plain), (a, plain)


@pytest.mark.kernel_paths
def test_one_strength_per_batch_row_equals_each_row_alone(tiny_model):
    toks = torch.randint(0, 100, (1, 6)).expand(3, 6)
    v = vec()
    with v.apply(tiny_model, [0.0, 0.5, -1.0]):
        rows = tiny_model(toks)
    for i, s in enumerate([0.0, 0.5, -1.0]):
        with v.apply(tiny_model, s):
            # a batch of 3 against a batch of 1: another kernel path, the 1e-4 bound
            assert torch.allclose(rows[i], tiny_model(toks[:1])[0], atol=1e-4)
    with pytest.raises(EmosaeError, match="2 strengths for a batch of 3"):
        with v.apply(tiny_model, [0.1, 0.2]):
            tiny_model(toks)
    with pytest.raises(EmosaeError, match="finite"):
        with v.apply(tiny_model, [0.1, float("nan")]):
            pass


def test_positions_and_a_readout_on_its_own_hook_survive_save_and_load(tmp_path):
    from dataclasses import replace

    from emosae.steering.vector import ReadoutRef

    g = torch.Generator().manual_seed(9)
    ref = ReadoutRef(
        torch.randn(32, generator=g), 2.0, 3, None, None, H2, torch.randn(32, generator=g)
    )
    v = replace(vec().with_readout(ref), positions="all")
    v.save(tmp_path / "v")
    w = SteeringVector.load(tmp_path / "v")
    assert w.positions == "all" and w.readout.hook == H2 and w.hook_name == H1
    assert torch.allclose(w.readout.unit, ref.unit) and torch.allclose(
        w.readout.unit.norm(), torch.tensor(1.0)
    )
    with pytest.raises(EmosaeError, match="positions"):
        replace(v, positions="prompt")
    with pytest.raises(EmosaeError, match="both the hook and its direction"):
        vec().with_readout(ReadoutRef(torch.zeros(32), 1.0, 0, None, None, H2, None))
