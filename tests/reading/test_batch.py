"""`emosae.read_many`: batched, length-sorted, right-padded readings equal `emosae.read`
of each record (to 1e-4) over mixed lengths, texts and conversations, per assistant turn
too; the tiny model checks the batching alone, exactly; and the short-text read rule."""

import pytest
import torch

import emosae
from emosae.core.errors import EmosaeError
from emosae.reading.batch import Record, plan_record, read_many, read_plans, score_sequences
from emosae.reading.trace import Basis, _hook_acts, text_read_start

STORY = (
    "The letter came on a grey Tuesday, and Mara read it twice at the kitchen table before "
    "she understood that the bakery she had kept alive for eleven years would close at the "
    "end of the month. She folded it carefully, as if neatness could undo it, and sat very "
    "still while the kettle screamed behind her."
)
RECORDS = [
    "Great.",
    "The food was cold and the waiter ignored us all night.",
    STORY,
    {"id": "chat-1", "messages": [{"role": "user", "content": "My dog died this morning."}]},
    {
        "id": "chat-2",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "I lost my job today."},
            {"role": "assistant", "content": "I'm sorry. That is hard."},
            {"role": "user", "content": "And my landlord wants me out by Friday!"},
            {"role": "assistant", "content": "Let's look at your options."},
        ],
    },
    "I won! I actually won the whole tournament!",
]


def test_text_read_start_rule():
    # long enough: the probe's skip, as stories are read
    assert text_read_start(40, 20) == 20 and text_read_start(170, 20) == 20
    # shorter than skip + min_span: every token after the sink
    assert text_read_start(39, 20) == 1 and text_read_start(5, 20) == 1
    assert text_read_start(2, 20) == 1 and text_read_start(1, 20) == 0
    assert text_read_start(25, 20, min_span=5) == 20 and text_read_start(24, 20, min_span=5) == 1
    assert text_read_start(1, 0) == 0 and text_read_start(7, 0) == 0  # no skip: all tokens


def _tiny_basis(d: int, hook: str) -> Basis:
    g = torch.Generator().manual_seed(1)
    unit = torch.nn.functional.normalize(torch.randn(3, d, generator=g), dim=1)
    center = torch.randn(d, generator=g)
    return Basis(hook, ["a", "b", "c"], unit, center, 2.0, 2, center * 0.5, torch.ones(3) * 3)


@pytest.mark.kernel_paths
def test_batched_scores_equal_one_at_a_time_on_tiny_model(tiny_model):
    hook = "blocks.1.hook_resid_post"
    basis = _tiny_basis(tiny_model.cfg.d_model, hook)
    g = torch.Generator().manual_seed(2)
    # lengths mixed so every batch is padded; token 0 (the pad id fallback) inside too
    seqs = [torch.randint(0, 101, (n,), generator=g) for n in (3, 17, 9, 30, 1, 12, 30, 5)]
    seqs[1][4] = 0
    chat = [i % 2 == 0 for i in range(len(seqs))]
    got = score_sequences(tiny_model, basis, seqs, chat, batch_size=3)
    for s, c, g_TC in zip(seqs, chat, got, strict=True):
        want = basis.score(_hook_acts(tiny_model, s, hook), chat=c)
        assert g_TC.shape == (len(s), 3)
        # padded batches of 3 against one at a time: the module's promise, 1e-4
        torch.testing.assert_close(g_TC, want, atol=1e-4, rtol=1e-4)


def test_record_of_rejects_malformed_items():
    assert Record.of("hi", 3) == Record(3, "hi")
    assert Record.of({"text": "hi", "id": "x"}, 0).id == "x"
    for bad, match in (
        ({"text": "a", "messages": []}, "exactly one of"),
        ({}, "exactly one of"),
        ({"text": "  "}, "non-empty string"),
        ({"text": "a", "id": 1.5}, "'id' must be"),
        ({"messages": "hello"}, "'messages' must be a list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": 3}]}, "content"),
        (42, "a record is"),
    ):
        with pytest.raises(EmosaeError, match=match):
            Record.of(bad, 0)


@pytest.fixture(scope="module")
def shipped():
    return emosae.load_directions()


@pytest.mark.kernel_paths
@pytest.mark.real
def test_read_many_equals_read_on_real_model(real_model, shipped):
    rows = list(read_many(real_model, RECORDS, shipped, batch_size=4, per_turn=True, chunk=4))
    assert [r["id"] for r in rows] == [0, 1, 2, "chat-1", "chat-2", 5]
    assert [r["kind"] for r in rows] == ["text"] * 3 + ["conversation"] * 2 + ["text"]
    concepts = list(shipped)
    worst = 0.0
    for rec, row in zip(RECORDS, rows, strict=True):
        what = rec if isinstance(rec, str) else rec["messages"]
        one = emosae.read(real_model, what, shipped)
        got = torch.tensor([row["scores"][c] for c in concepts])
        worst = max(worst, float((got - one.at_read).abs().max()))
        if isinstance(rec, dict):
            turns = [i for i, m in enumerate(what) if m["role"] == "assistant"]
            assert [t["turn"] for t in row["turns"]] == turns
            for t in row["turns"]:
                before = emosae.read(real_model, what[: t["turn"]], shipped).at_read
                got = torch.tensor([t["scores"][c] for c in concepts])
                worst = max(worst, float((got - before).abs().max()))
        else:
            assert "turns" not in row
    assert worst < 1e-4, worst
    # a turn whose prefix is not a token prefix of the whole is read on its own: the same
    rec = Record.of(RECORDS[4], 0)
    plan = plan_record(real_model, rec, 20, per_turn=True)
    assert [i for i, _ in plan.turns] == [2, 4] and plan.extra == []
    alone = plan._replace(turns=[], extra=[(i, plan.tokens[: pos + 1]) for i, pos in plan.turns])
    basis = Basis.of(shipped)
    (a, _), (b, _) = (read_plans(real_model, basis, [rec], [p], 4, True)[0] for p in (plan, alone))
    for ta, tb in zip(a["turns"], b["turns"], strict=True):
        assert ta["turn"] == tb["turn"]
        assert max(abs(ta["scores"][c] - tb["scores"][c]) for c in concepts) < 1e-4
    # the story is long enough to be read from the skip on; the short texts from token 1
    assert emosae.read(real_model, STORY, shipped).read_from == 20
    assert emosae.read(real_model, RECORDS[1], shipped).read_from == 1


@pytest.mark.real
def test_bundled_stories_are_long_enough_to_read_as_before(real_model, shipped):
    """Every bundled story reads from the skip, as when the probes were fitted: the
    short-text rule changes no story reading (so no held-out number)."""
    from emosae import data

    skip = next(iter(shipped.values())).readout.skip
    tok = real_model.tokenizer
    lengths = [len(tok(s.text, add_special_tokens=False)["input_ids"]) for s in data.load_stories()]
    assert len(lengths) == 768 and skip == 20
    assert {text_read_start(n, skip) for n in lengths} == {skip}
