"""The fast generation engine (staircase prefill, preallocated KV) against HF `generate` and the simple engine."""

from __future__ import annotations

import pytest
import torch
from tiny import FAMILIES, tiny_model, tiny_tokenizer
from transformers import MistralConfig, MistralForCausalLM
from transformers.cache_utils import DynamicLayer

from detoxedit.models import ChatFormat, Sampling, generate, generate_ids
from detoxedit.models.generation import _preallocatable, _PreallocatedLayer, stop_token_ids
from detoxedit.models.multidelta import RowDeltas

# Several distinct lengths, two of equal length, a one-token prompt: every staircase case.
PROMPTS = ["hi", "a somewhat longer prompt", "x", "what is going on here, tell me", "ok", "no",
           "a prompt that is longer than all the other prompts in this list, by far"]


def _encoded(tok) -> list[list[int]]:
    return [ChatFormat(tok).encode(p) for p in PROMPTS] + [[7]]


def _hf_greedy(model, tok, ids: list[int], max_new_tokens: int) -> list[int]:
    prompt = torch.tensor([ids])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=sorted(stop_token_ids(model, tok)), pad_token_id=tok.pad_token_id)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_engine_equals_hf_one_at_a_time_and_simple_engine(family: str) -> None:
    model, tok = tiny_model(family), tiny_tokenizer()
    assert _preallocatable(model, 100)  # mistral: a 4096-token window never slides here
    encoded = _encoded(tok)
    fast = generate_ids(model, tok, encoded, 10, progress=False, engine="fast")
    assert fast == generate_ids(model, tok, encoded, 10, progress=False, engine="simple")
    assert fast == [_hf_greedy(model, tok, ids, 10) for ids in encoded]


def test_fast_engine_keeps_input_order_when_rows_stop_early() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    eos = tok.eos_token_id
    with torch.no_grad():  # the token after 'x' becomes EOS: rows stop at different steps
        model.lm_head.weight[eos] += 0.5 * model.lm_head.weight[ord("x")]
    encoded = _encoded(tok)[::-1]  # shortest first: the engine must sort and unsort
    fast = generate_ids(model, tok, encoded, 12, progress=False)
    assert fast == [generate_ids(model, tok, [ids], 12, progress=False, engine="simple")[0] for ids in encoded]


def test_fast_engine_sampling_is_seeded_and_matches_simple_engine() -> None:
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    sampled = Sampling(do_sample=True, temperature=1.3, top_p=0.9, seed=5)
    fast = generate(model, tok, PROMPTS, 8, sampling=sampled, progress=False)
    assert fast == generate(model, tok, PROMPTS, 8, sampling=sampled, progress=False, engine="simple")


def test_fast_engine_with_per_row_deltas_equals_each_edit_applied_alone() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    name = "model.layers.1.mlp.down_proj.weight"
    weight = dict(model.named_parameters())[name]
    edits = [{name: torch.randn_like(weight, generator=torch.Generator().manual_seed(s)) * 0.5} for s in range(2)]
    encoded = _encoded(tok)
    owners = [i % 3 - 1 for i in range(len(encoded))]  # -1 (no edit), 0, 1, ...
    batched = generate_ids(model, tok, encoded, 10, row_context=RowDeltas(model, edits, owners), progress=False)
    for row, owner in enumerate(owners):
        with torch.no_grad():
            if owner >= 0:
                weight += edits[owner][name]
            alone = _hf_greedy(model, tok, encoded[row], 10)
            if owner >= 0:
                weight -= edits[owner][name]
        assert batched[row] == alone, f"row {row} (owner {owner})"


def test_row_context_gets_every_row_first_then_the_longer_prompts() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    seen: list[list[int]] = []

    class Recorder:
        def __init__(self, rows: torch.Tensor) -> None:
            seen.append(rows.tolist())

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    encoded = _encoded(tok)
    generate_ids(model, tok, encoded, 3, progress=False, row_context=Recorder)
    assert sorted(seen[0]) == list(range(len(encoded)))
    longest = max(range(len(encoded)), key=lambda i: len(encoded[i]))
    assert seen[1:].count([longest]) >= 1  # the last prefill chunk runs only the longest prompt


def test_sliding_window_that_would_slide_falls_back_to_the_simple_engine() -> None:
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=262, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=8, eos_token_id=258)
    model, tok = MistralForCausalLM(config).eval(), tiny_tokenizer()
    assert not _preallocatable(model, 9) and _preallocatable(model, 8)
    encoded = _encoded(tok)[:4]
    assert generate_ids(model, tok, encoded, 6, progress=False) == \
        generate_ids(model, tok, encoded, 6, progress=False, engine="simple")


def test_unknown_engine_is_refused() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(ValueError, match="engine"):
        generate_ids(model, tok, [[1, 2]], 2, engine="turbo")


def test_preallocated_layer_behaves_like_a_dynamic_layer() -> None:
    torch.manual_seed(0)
    keys = [torch.randn(3, 2, n, 4) for n in (5, 1, 1)]
    dynamic, fast = DynamicLayer(), _PreallocatedLayer(capacity=6)
    for k in keys:  # the third update overflows the capacity of 6 and must grow
        expected = dynamic.update(k, -k)
        got = fast.update(k, -k)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert fast.get_seq_length() == dynamic.get_seq_length() == 7
    kept = torch.tensor([2, 0])
    dynamic.batch_select_indices(kept)
    fast.batch_select_indices(kept)
    assert torch.equal(fast.keys, dynamic.keys) and torch.equal(fast.values, dynamic.values)


def test_preallocated_layer_left_aligns_rows_of_a_staircase_prefill() -> None:
    layer = _PreallocatedLayer(capacity=5)
    layer.update(torch.tensor([[[[1.0], [2.0]]], [[[5.0], [6.0]]]]), torch.zeros(2, 1, 2, 1))  # both rows: 2 tokens
    layer.keep_first(1)  # row 1 is a 2-token prompt; row 0 runs on
    layer.update(torch.tensor([[[[3.0]]]]), torch.zeros(1, 1, 1, 1))
    layer.left_align([3, 2])
    assert layer.keys[:, 0, :, 0].tolist() == [[1.0, 2.0, 3.0], [0.0, 5.0, 6.0]]
