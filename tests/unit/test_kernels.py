"""The generation kernels: few-row linear products and decoding attention that skips padded keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_generation_fast import _encoded, _hf_greedy
from tiny import FAMILIES, tiny_model, tiny_tokenizer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from detoxedit.models import generate_ids
from detoxedit.models.generation import kernels
from detoxedit.models.generation.kernels import GROUPED_ATTENTION, few_row_linear, plan_key_groups, skip_padded_keys


@pytest.mark.parametrize("shape", [(1, 16), (3, 16), (2, 1, 16), (4, 4, 16), (4, 5, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_few_row_linear_equals_f_linear(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(24, 16)
    b = torch.randn(24) if bias else None
    expected = F.linear(x, weight, b)
    with few_row_linear():
        got = F.linear(x, weight, b)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_weight_first_rows_follows_the_measured_table() -> None:
    assert kernels.weight_first_rows(1) == 2  # a matrix-vector product is slow: padded to two rows
    assert [kernels.weight_first_rows(r) for r in (2, 9, 16, 64)] == [2, 9, 16, 64]
    assert [kernels.weight_first_rows(r) for r in (10, 13, 25, 72)] == [None] * 4
    assert kernels.weight_first_rows(8, max_rows=4) is None


def test_few_row_linear_leaves_large_and_mixed_calls_to_torch() -> None:
    weight = torch.randn(8, 4)
    calls = []
    mode = few_row_linear(max_rows=3)
    real = mode._weight_first
    mode._weight_first = lambda *a, **k: calls.append(1) or real(*a, **k)
    with mode:
        assert torch.equal(F.linear(torch.ones(5, 4), weight), torch.ones(5, 4) @ weight.t())  # 5 rows > 3
        F.linear(torch.ones(2, 4, dtype=torch.float64), weight.double())
        assert F.linear(torch.ones(2, 4), weight).shape == (2, 8)
    assert len(calls) == 3  # offered every call; only qualifying ones are rewritten (checked above by value)


def test_plan_key_groups_splits_rows_by_their_first_key() -> None:
    assert plan_key_groups([0, 0, 500, 500], keys=1000, overhead=10) == [(0, 2, 0), (2, 4, 500)]
    assert plan_key_groups([0, 3, 0], keys=1000, overhead=10) is None  # nothing worth skipping
    assert plan_key_groups([600, 0], keys=1000, overhead=1000) is None  # a second call costs more than it saves
    assert plan_key_groups([600, 620], keys=1000, overhead=0) == [(0, 1, 600), (1, 2, 620)]
    assert plan_key_groups([900], keys=1000) == [(0, 1, 900)]


def test_skip_padded_keys_switches_the_models_attention_back_even_after_an_error() -> None:
    model = tiny_model("llama")
    before = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with pytest.raises(RuntimeError):
        with skip_padded_keys(model):
            assert model.config._attn_implementation == GROUPED_ATTENTION
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is before  # transformers' own sdpa entry is never replaced


def test_few_row_products_are_for_cpu_only(monkeypatch) -> None:
    model = tiny_model("llama")
    entered = []
    monkeypatch.setattr(kernels, "few_row_linear", lambda: entered.append(1) or kernels._WeightFirstLinear())
    with kernels.generation_kernels(model):
        pass
    assert entered == [1]
    monkeypatch.setattr(torch.nn.Parameter, "device", property(lambda self: torch.device("cuda", 0)), raising=False)
    with kernels.generation_kernels(model):
        pass
    assert entered == [1]  # a table measured on one CPU is not applied to a GPU


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_decoding_attention_keeps_the_greedy_tokens(family: str, monkeypatch) -> None:
    """With grouping forced (no per-group cost), rows of very different lengths decode as HF does alone."""
    monkeypatch.setattr(kernels, "GROUP_OVERHEAD_KEYS", 0)
    grouped = []
    real = kernels._RowGroupedAttention._groups

    def recording(self, *args):
        groups = real(self, *args)
        grouped.append(groups is not None)
        return groups

    monkeypatch.setattr(kernels._RowGroupedAttention, "_groups", recording)
    model, tok = tiny_model(family), tiny_tokenizer()
    encoded = _encoded(tok)
    fast = generate_ids(model, tok, encoded, 8, progress=False)
    assert fast == [_hf_greedy(model, tok, ids, 8) for ids in encoded]
    uses_sdpa = model.config._attn_implementation == "sdpa"
    assert any(grouped) == uses_sdpa

