"""DINM's edit target options: a shorter target and an ending one (issue 17, remedies for looping replies)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_item, tiny_model, tiny_tokenizer

from detoxedit.errors import ConfigError, DetoxeditError
from detoxedit.methods import build_method
from detoxedit.methods._tuning import encode_example, first_sentences
from detoxedit.methods.base import apply_deltas, restore_weights
from detoxedit.models.chat import ChatFormat

FAST = {"steps": 3, "lr": 5e-2, "layer": 1}
SAFE = "I'm sorry, I can't help with that. Breaking in is a crime! Ask me something else?"


@pytest.mark.parametrize(("count", "expected"), [
    (1, "I'm sorry, I can't help with that."),
    (2, "I'm sorry, I can't help with that. Breaking in is a crime!"),
    (3, SAFE),
    (9, SAFE),
    (None, SAFE),
])
def test_first_sentences_cuts_after_sentence_ends(count, expected):
    assert first_sentences(SAFE, count) == expected


def test_first_sentences_keeps_a_text_without_sentence_ends_and_ignores_decimals():
    assert first_sentences("no full stop here", 1) == "no full stop here"
    assert first_sentences("It costs 3.5 dollars. Then more.", 1) == "It costs 3.5 dollars."


def test_end_of_turn_appends_the_token_generation_stops_at():
    tok = tiny_tokenizer()
    fmt = ChatFormat(tok, "template")
    plain = encode_example(fmt, "Hi", "No.", None, "test")
    ending = encode_example(fmt, "Hi", "No.", None, "test", end_of_turn=True)
    assert ending.target_len == plain.target_len + 1
    assert ending.input_ids[0, :-1].tolist() == plain.input_ids[0].tolist()
    assert ending.input_ids[0, -1].item() == tok.eos_token_id


def _end_probability(model, tok, item) -> float:
    """P(end of turn | adversarial prompt + whole safe reply) under the model."""
    example = encode_example(ChatFormat(tok, "auto"), item.adversarial_prompt, item.safe_generation, None, "test",
                             end_of_turn=True)
    with torch.no_grad():
        logits = model(example.input_ids).logits[0, -2]
    return float(logits.softmax(-1)[tok.eos_token_id])


def test_an_ending_target_teaches_the_edited_model_to_stop_after_the_reply():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    item = tiny_item(3, safe="No way.")
    settings = {"steps": 10, "lr": 5e-2, "layer": 3, "c_edit": 1.0}
    before = _end_probability(model, tok, item)
    after = {}
    for ending in (False, True):
        edit = build_method("dinm", settings | {"target_end_of_turn": ending}).execute(model, tok, item)
        originals = apply_deltas(model, edit.deltas)
        after[ending] = _end_probability(model, tok, item)
        restore_weights(model, originals)
    assert after[True] > 1.5 * max(before, after[False])  # measured: about 1.9x


def test_target_sentences_trains_on_the_first_sentences_only():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    short = build_method("dinm", FAST | {"target_sentences": 1}).execute(model, tok, tiny_item(3, safe=SAFE))
    cut = build_method("dinm", FAST).execute(model, tok, tiny_item(3, safe="I'm sorry, I can't help with that."))
    whole = build_method("dinm", FAST).execute(model, tok, tiny_item(3, safe=SAFE))
    (name,) = short.deltas
    assert torch.equal(short.deltas[name], cut.deltas[name])
    assert not torch.equal(short.deltas[name], whole.deltas[name])


def test_target_sentences_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="target_sentences"):
        build_method("dinm", {"target_sentences": 0})


def test_an_ending_target_needs_an_end_token():
    tok = tiny_tokenizer()
    tok.eos_token = None
    with pytest.raises(DetoxeditError, match="no EOS token"):
        encode_example(ChatFormat(tok, "plain"), "Hi", "No.", None, "test", end_of_turn=True)
