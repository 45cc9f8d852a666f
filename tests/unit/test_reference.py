"""detoxedit's DINM against the one-screen reference (tests/reference.py) on tiny models."""

from __future__ import annotations

import pytest
import torch
from reference import encode_pair, plain_dinm, plain_locate
from tiny import tiny_item, tiny_model, tiny_tokenizer

from detoxedit.methods import build_method
from detoxedit.methods.base import weight_checksum
from detoxedit.models import ChatFormat, get_adapter


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("fast_prefix", [True, False])
def test_dinm_equals_the_plain_reference(family: str, fast_prefix: bool) -> None:
    model, tok = tiny_model(family), tiny_tokenizer()
    method = build_method("dinm", {"steps": 4, "lr": 1e-2, "max_input_tokens": 64, "fast_prefix": fast_prefix})
    item = tiny_item(3)
    method.prepare(model, tok)
    edit = method.execute(model, tok, item)

    cfg, fmt = method.config, ChatFormat(tok, method.config.chat_format)
    layer = plain_locate(model, fmt, item, cfg.max_input_tokens)
    name = get_adapter(model).down_proj_name(layer)
    params = dict(model.named_parameters())
    edit_pair = encode_pair(fmt, item.adversarial_prompt, item.safe_generation, cfg.max_input_tokens)
    kl_pair = encode_pair(fmt, item.knowledge_constraint.prompt, item.knowledge_constraint.answer, cfg.max_input_tokens)
    for p in model.parameters():
        p.requires_grad_(False)
    before = weight_checksum(params[name])
    delta, original = plain_dinm(model, params[name], edit_pair, kl_pair, cfg)
    with torch.no_grad():
        params[name].copy_(original)
    assert weight_checksum(params[name]) == before

    assert edit.layer == layer and list(edit.deltas) == [name]
    ours = edit.deltas[name]
    assert ours.abs().max() > 0
    assert (ours - delta).norm() / delta.norm() < 1e-4  # same maths; only float rounding differs
