"""Chat formats: template, plain (documented), raw (untouched)."""

from __future__ import annotations

import pytest
from tiny import tiny_tokenizer

from detoxedit.errors import DetoxeditError
from detoxedit.models.chat import ChatFormat


def test_template_renders_chatml_with_generation_prompt() -> None:
    fmt = ChatFormat(tiny_tokenizer(), "auto", system_prompt="Be safe.")
    text = fmt.render("Hi")
    assert text == "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert fmt.resolved_mode == "template" and not fmt.add_special_tokens


def test_auto_falls_back_to_plain_for_base_models() -> None:
    fmt = ChatFormat(tiny_tokenizer(chat_template=False))
    assert fmt.resolved_mode == "plain"
    assert fmt.render("Hi") == "User: Hi\nAssistant:"
    assert ChatFormat(fmt.tokenizer, "plain", "Sys").render("Hi") == "Sys\n\nUser: Hi\nAssistant:"


def test_raw_passes_text_untouched() -> None:
    fmt = ChatFormat(tiny_tokenizer(), "raw", system_prompt="ignored")
    assert fmt.render("  exact text\n") == "  exact text\n"


def test_encode_matches_render() -> None:
    tok = tiny_tokenizer()
    fmt = ChatFormat(tok)
    assert tok.decode(fmt.encode("Hello")) == fmt.render("Hello")


def test_bad_modes_are_rejected() -> None:
    with pytest.raises(DetoxeditError, match="unknown chat format"):
        ChatFormat(tiny_tokenizer(), "chatml")
    with pytest.raises(DetoxeditError, match="no chat template"):
        ChatFormat(tiny_tokenizer(chat_template=False), "template")


def test_plain_replies_are_cut_where_a_base_model_starts_the_next_user_turn() -> None:
    plain = ChatFormat(tiny_tokenizer(chat_template=False))
    assert plain.cut_reply("Paris.\nUser: And Spain?\nAssistant: Madrid.") == "Paris."
    assert plain.cut_reply(" User: Why?\nAssistant: Because.") == ""  # no answer before the model's own next turn
    assert plain.cut_reply("Line one.\nLine two about a User: field") == "Line one.\nLine two about a User: field"
    assert ChatFormat(tiny_tokenizer()).cut_reply("Paris.\nUser: more") == "Paris.\nUser: more"  # templates stop on tokens
