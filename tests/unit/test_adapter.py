"""The architecture adapter finds the same standard modules in all five families, from structure alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tiny import FAMILIES, tiny_model

from detoxedit.errors import ArchitectureError
from detoxedit.models.adapter import ArchitectureSpec, ModelAdapter, declare_architecture, get_adapter


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_finds_modules(family: str) -> None:
    model = tiny_model(family)
    adapter = get_adapter(model)
    assert adapter.num_layers == 4
    assert adapter.hidden_size == 32
    assert adapter.lm_head is model.get_output_embeddings()
    down = adapter.down_proj(2)
    assert (down.in_features, down.out_features) == (adapter.up_proj(2).out_features, 32)
    assert down.in_features in (64, 128)  # d_ff: 64 for the gated families, 4 * 32 for GPT-2
    assert adapter.down_proj_name(2) in dict(model.named_parameters())
    assert "norm" in type(adapter.final_norm).__name__.lower()
    assert adapter.attention(0) is not adapter.mlp(0)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma"])
def test_gated_families_have_gate(family: str) -> None:
    adapter = get_adapter(tiny_model(family))
    gate = adapter.gate_proj(1)
    assert gate is not None and gate.module is not adapter.up_proj(1).module


@pytest.mark.parametrize("family", FAMILIES)
def test_down_projection_view_matches_module_output(family: str) -> None:
    """x @ weight_in_out (+ bias) reproduces the module for both Linear and GPT-2's transposed Conv1D."""
    adapter = get_adapter(tiny_model(family))
    view = adapter.down_proj(0)
    x = torch.randn(3, view.in_features)  # (rows, d_ff)
    expected = view.module(x)
    bias = getattr(view.module, "bias", None)
    manual = x @ view.weight_in_out() + (bias if bias is not None else 0)
    torch.testing.assert_close(manual, expected)
    delta = torch.randn(view.in_features, view.out_features)
    assert view.to_param_layout(delta).shape == view.weight.shape
    torch.testing.assert_close(view.to_in_out(view.to_param_layout(delta)), delta)


def test_gpt2_conv1d_is_transposed() -> None:
    adapter = get_adapter(tiny_model("gpt2"))
    assert adapter.down_proj(0).transposed
    assert adapter.down_proj(0).weight.shape == (128, 32)  # Conv1D stores (in, out)
    assert not get_adapter(tiny_model("llama")).down_proj(0).transposed


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mixer = nn.Identity()


class _Unknown(nn.Module):
    """A model with layers but no recognisable MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block() for _ in range(3)])
        self.head = nn.Linear(4, 4)

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_unknown_architecture_names_what_is_missing() -> None:
    with pytest.raises(ArchitectureError) as info:
        get_adapter(_Unknown())
    message = str(info.value)
    assert "_Unknown" in message and "MLP" in message and "declare_architecture" in message


class _Declared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.ModuleDict({"attn": nn.Linear(4, 4), "ffn": nn.ModuleDict(
            {"w_in": nn.Linear(4, 8), "w_out": nn.Linear(8, 4)})}) for _ in range(2)])
        self.norm_out = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10)


def test_declared_mapping_is_used() -> None:
    spec = ArchitectureSpec(layers="blocks", attention="attn", mlp="ffn", up_proj="ffn.w_in",
                            down_proj="ffn.w_out", final_norm="norm_out", lm_head="head")
    declare_architecture("_Declared", spec)
    adapter = ModelAdapter(_Declared())
    assert adapter.num_layers == 2 and adapter.down_proj(1).in_features == 8
    assert adapter.describe()["down_proj"] == "ffn.w_out"


def test_bad_declared_path_fails_early() -> None:
    spec = ArchitectureSpec(layers="blocks", attention="attn", mlp="ffn", up_proj="ffn.w_in",
                            down_proj="ffn.nope", final_norm="norm_out", lm_head="head")
    with pytest.raises(ArchitectureError, match="bad module path"):
        ModelAdapter(_Declared(), spec)
