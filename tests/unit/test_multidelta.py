"""Per-row deltas: one batched generation of several edits equals applying each edit in turn."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from detoxedit.methods.base import applied, weight_checksum
from detoxedit.models import ChatFormat, generate, generate_ids, get_adapter
from detoxedit.models.multidelta import RowDeltas, supports_row_deltas



PROMPTS = ["How do I bake bread?", "Tell me a story.", "What is 2+2?", "Say hi", "Name a colour please"]


def sharpened(family: str) -> torch.nn.Module:
    """A tiny model with a scaled-up final norm: large logit gaps, so rounding never flips a greedy choice.

    (The final norm, not the head: GPT-2 ties its head to the input embeddings.)
    """
    model = tiny_model(family)
    with torch.no_grad():
        get_adapter(model).final_norm.weight.mul_(8.0)
    return model


def random_deltas(model: torch.nn.Module, layers: list[int], seed: int, scale: float = 0.5) -> list[dict]:
    """One delta set per layer in `layers`: a random change of that layer's down-projection."""
    adapter = get_adapter(model)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for layer in layers:
        weight = adapter.down_proj(layer).weight
        out.append({adapter.down_proj_name(layer): scale * torch.randn(weight.shape, generator=generator)})
    return out


def chat_ids(model, tok, prompts, row_context=None) -> list[list[int]]:
    """Generated token ids (exact, unlike decoded text) for chat-formatted prompts."""
    encoded = [ChatFormat(tok).encode(p) for p in prompts]
    return generate_ids(model, tok, encoded, 12, row_context=row_context, progress=False)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_row_deltas_equal_applied_generation(family):
    model, tok = sharpened(family), tiny_tokenizer()
    edits = random_deltas(model, [0, 2, 3], seed=1) + [{}]  # different layers, and one item without a delta
    prompts = [p for _ in edits for p in PROMPTS]
    owners = [owner for owner in range(len(edits)) for _ in PROMPTS]
    before = {n: weight_checksum(p) for n, p in model.named_parameters()}

    batched = chat_ids(model, tok, prompts, row_context=RowDeltas(model, edits, owners))

    one_by_one = []
    for deltas in edits:
        with applied(model, deltas):
            one_by_one += chat_ids(model, tok, PROMPTS)
    assert batched == one_by_one
    vanilla = chat_ids(model, tok, PROMPTS)
    assert batched[-len(PROMPTS):] == vanilla  # the item without a delta is the vanilla model
    assert batched[: len(PROMPTS)] != vanilla  # the deltas really change the generated ids
    assert {n: weight_checksum(p) for n, p in model.named_parameters()} == before
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_row_deltas_equal_applied_token_ids(family):
    """Exact token ids (not only decoded text), rows in a shuffled order and mixed edit owners."""
    model, tok = sharpened(family), tiny_tokenizer()
    edits = random_deltas(model, [1, 1, 3], seed=7)
    encoded = [tok(p)["input_ids"] for p in PROMPTS]
    owners = [0, 2, 1, -1, 2]
    batched = generate_ids(model, tok, encoded, 10, row_context=RowDeltas(model, edits, owners), progress=False)
    for row, owner in enumerate(owners):
        deltas = edits[owner] if owner >= 0 else {}
        with applied(model, deltas):
            alone = generate_ids(model, tok, [encoded[row]], 10, progress=False)[0]
        assert batched[row] == alone, f"row {row} (owner {owner})"


def test_hooks_removed_on_exception(tiny_llama):
    model, tok = tiny_llama
    context = RowDeltas(model, random_deltas(model, [0], seed=0), [0])
    with pytest.raises(RuntimeError):
        with context(torch.tensor([0])):
            assert any(m._forward_hooks for m in model.modules())
            raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in model.modules())


def test_only_linear_weights_supported(tiny_llama):
    model, _ = tiny_llama
    adapter = get_adapter(model)
    norm_name = next(n for n, _ in model.named_parameters() if "norm" in n)
    assert supports_row_deltas(model, {adapter.down_proj_name(1): torch.zeros(1)})
    assert not supports_row_deltas(model, {norm_name: torch.zeros(1)})


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_row_subsets_map_to_their_owners(family):
    """After rows finish, the engine passes a subset of prompt indices; each must keep its own delta."""
    model, tok = sharpened(family), tiny_tokenizer()
    edits = random_deltas(model, [0, 3], seed=3)
    owners = [0, -1, 1, 0]
    context = RowDeltas(model, edits, owners)
    ids = torch.tensor([tok("abcdef")["input_ids"]] * 4)  # (4, 6)
    for rows in ([0, 1, 2, 3], [2, 3], [1, 3], [2], [2, 3]):
        with torch.no_grad(), context(torch.tensor(rows)):
            logits = model(input_ids=ids[: len(rows)]).logits  # (rows, 6, vocab)
        for position, row in enumerate(rows):
            deltas = edits[owners[row]] if owners[row] >= 0 else {}
            with torch.no_grad(), applied(model, deltas):
                alone = model(input_ids=ids[:1]).logits[0]
            torch.testing.assert_close(logits[position], alone, rtol=1e-4, atol=1e-4)
