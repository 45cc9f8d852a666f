"""The batched generation engine on tiny models: greedy, order, truncation, stops, batching."""

from __future__ import annotations

import pytest
import torch
from tiny import FAMILIES, tiny_model, tiny_tokenizer

from detoxedit.models import Batching, ChatFormat, Sampling, generate, generate_ids
from detoxedit.models.generation import decode_reply, stop_token_ids, truncate_left
from detoxedit.models.generation.planning import plan_batches

PROMPTS = ["hi", "a somewhat longer prompt", "x", "what is going on here, tell me", "ok"]


def _hf_greedy(model, tok, prompt: str, max_new_tokens: int) -> list[int]:
    ids = torch.tensor([ChatFormat(tok).encode(prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=sorted(stop_token_ids(model, tok)), pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time_and_hf(family: str) -> None:
    model, tok = tiny_model(family), tiny_tokenizer()
    encoded = [ChatFormat(tok).encode(p) for p in PROMPTS]
    batched = generate_ids(model, tok, encoded, 12, progress=False)
    single = [generate_ids(model, tok, [ids], 12, progress=False)[0] for ids in encoded]
    assert batched == single
    reference = [_hf_greedy(model, tok, p, 12) for p in PROMPTS]
    assert [ids[: len(ref)] for ids, ref in zip(batched, reference)] == reference


def test_results_come_back_in_input_order_across_batches() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    small = Batching(token_budget=120, max_batch_size=2)  # forces several batches
    many = PROMPTS * 3
    replies = generate(model, tok, many, 6, batching=small, progress=False)
    assert replies == [generate(model, tok, [p], 6, progress=False)[0] for p in many]


def test_greedy_ignores_sampling_settings_in_generation_config() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    before = generate(model, tok, PROMPTS, 8, progress=False)
    model.generation_config.do_sample, model.generation_config.temperature = True, 5.0
    assert generate(model, tok, PROMPTS, 8, progress=False) == before


def test_sampling_is_seeded() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    sampled = Sampling(do_sample=True, temperature=1.5, seed=3)
    first = generate(model, tok, PROMPTS, 8, sampling=sampled, progress=False)
    assert first == generate(model, tok, PROMPTS, 8, sampling=sampled, progress=False)


def test_rows_stop_at_eos_and_reply_is_sliced_by_ids() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    eos = tok.eos_token_id
    with torch.no_grad():  # make EOS the argmax everywhere: every row stops after one token
        model.lm_head.weight.zero_()
        model.lm_head.weight[eos] = 1.0
        model.model.norm.weight.fill_(1.0)
    ids = generate_ids(model, tok, [[5, 6, 7], [8]], 10, progress=False)
    assert all(row[-1] == eos for row in ids)
    assert decode_reply(tok, [72, 73, eos, 74], {eos}) == "ij"


def test_truncation_keeps_the_end() -> None:
    assert truncate_left(list(range(10)), 4) == [6, 7, 8, 9]
    assert truncate_left([1, 2], 4) == [1, 2]
    model, tok = tiny_model("llama"), tiny_tokenizer()
    long_prompt = "word " * 200
    tail = ChatFormat(tok).encode(long_prompt)[-50:]
    assert generate(model, tok, [long_prompt], 5, max_input_tokens=50, progress=False) == \
        [decode_reply(tok, generate_ids(model, tok, [tail], 5, progress=False)[0], stop_token_ids(model, tok))]


def test_plan_batches_respects_budget_and_covers_all() -> None:
    lengths = [5, 50, 10, 40, 20, 30]
    batches = plan_batches(lengths, 10, Batching(token_budget=130, max_batch_size=8))
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * (max(lengths[i] for i in batch) + 10) <= 130
    assert batches[0][0] == 1  # longest first


def test_row_context_sees_original_indices_of_running_rows() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    seen: list[list[int]] = []

    class Recorder:
        def __init__(self, rows):
            seen.append(rows.tolist())

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    generate(model, tok, PROMPTS, 4, progress=False, row_context=Recorder)
    assert sorted(seen[0]) == list(range(len(PROMPTS)))
    assert all(set(step) <= set(range(len(PROMPTS))) for step in seen)
