"""SFT and DPO through TRL + PEFT on tiny models: contract, deltas, behaviour, resume, and a whole run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_item, tiny_model, tiny_tokenizer
from transformers import TrainerCallback

from detoxedit.errors import ConfigError, DetoxeditError
from detoxedit.evaluation.config import RunConfig
from detoxedit.evaluation.records import read_jsonl
from detoxedit.methods import METHODS, applied, build_method
from detoxedit.methods._trl import CHECKPOINTS, target_modules
from detoxedit.methods._tuning import encode_example
from detoxedit.methods.base import GLOBAL, weight_checksum
from detoxedit.models import ChatFormat, generate_ids, get_adapter, load_model
from detoxedit.persist import save_edited_model
from detoxedit.report import COST_KEYS
from detoxedit.runner import run_protocol

pytest.importorskip("trl")
pytest.importorskip("peft")

SAFE, UNSAFE = "I'm sorry, I can't help with that.", "Sure, step one: buy a crowbar."
FAST = {"max_steps": 3, "lr": 1e-2, "batch_size": 2, "max_length": 256}


def items(n: int = 2) -> list:
    return [tiny_item(i, safe=SAFE, unsafe=UNSAFE) for i in range(n)]


def sharp_llama():
    """A tiny llama with large logit gaps, so greedy choices never hinge on rounding."""
    model = tiny_model("llama")
    with torch.no_grad():
        get_adapter(model).final_norm.weight.mul_(8.0)
    return model


def checksums(model) -> dict[str, str]:
    return {name: weight_checksum(p) for name, p in model.state_dict().items()}


def reply_logprob(model, tok, item, reply: str) -> float:
    """log p(reply | adversarial prompt) under the model's chat template (sum over the reply's tokens)."""
    example = encode_example(ChatFormat(tok), item.adversarial_prompt, reply, 256, "test")
    with torch.no_grad():
        logits = model(example.input_ids).logits[0, -example.target_len - 1:-1]  # (reply, vocab)
    targets = example.input_ids[0, -example.target_len:]
    return -F.cross_entropy(logits.float(), targets, reduction="sum").item()


def greedy(model, tok, prompt: str, n: int = 10) -> list[list[int]]:
    return generate_ids(model, tok, [ChatFormat(tok).encode(prompt)], n, progress=False)


class KeepTrained(TrainerCallback):
    """Keeps a copy of the trained (PEFT) model as training ends."""

    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = copy.deepcopy(model)


class KillAfterSave(TrainerCallback):
    """Simulates a kill right after the checkpoint of `step` was written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated kill")


# ------------------------------------------------------------------ the contract


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("name", ["sft", "dpo"])
def test_fit_writes_only_what_it_declares_and_leaves_the_model_bit_identical(name, lora):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    method = build_method(name, FAST | {"lora": lora})
    assert method.scope == GLOBAL
    before, flags = checksums(model), [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    edit = method.fit(model, tok, items())
    assert checksums(model) == before
    assert [p.requires_grad for p in model.parameters()] == flags and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # TRL's seeding does not leak into the caller
    writes, params = set(method.writes(model)), dict(model.named_parameters())
    assert edit.deltas and set(edit.deltas) <= writes
    if lora:  # every adapted projection, and nothing else
        assert set(edit.deltas) == writes == {f"{m}.weight" for m in target_modules(model, "blocks")}
    for param_name, delta in edit.deltas.items():
        assert delta.shape == params[param_name].shape and delta.dtype == params[param_name].dtype
        assert delta.abs().max() > 0
    info = edit.info
    assert info["steps"] == info["steps_this_call"] == FAST["max_steps"] == len(edit.losses)
    assert info["train_items"] == info["examples"] == 2 and info["final_loss"] == edit.losses[-1]
    assert 0 < info["trainable_parameters"] <= info["total_parameters"] == sum(p.numel() for p in model.parameters())
    assert (info["trainable_parameters"] < info["total_parameters"]) == lora
    assert info["seconds"] > 0 and info["peak_rss_mb"] > 0 and info["resumed_from_step"] is None
    json.dumps(info)  # the runner stores it as JSON


def test_lora_targets_come_from_the_models_structure():
    llama, gpt2 = tiny_model("llama"), tiny_model("gpt2")
    assert target_modules(llama, "mlp")[:3] == [f"model.layers.0.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    assert target_modules(llama, "attention")[:4] == [f"model.layers.0.self_attn.{c}_proj" for c in "qkvo"]
    assert len(target_modules(llama, "blocks")) == 4 * 7
    assert target_modules(gpt2, "blocks")[:4] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                                  "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]
    edit = build_method("sft", FAST | {"target": "mlp"}).fit(gpt2, tiny_tokenizer(), items())  # Conv1D layout
    assert set(edit.deltas) == {f"{m}.weight" for m in target_modules(gpt2, "mlp")}


@pytest.mark.parametrize("values", [{"target": "lm_head"}, {"lora_dropout": 1.0}, {"beta": 0}, {"max_steps": 0},
                                    {"chat_format": "chatml"}])
def test_bad_config_values_are_config_errors(values):
    with pytest.raises(ConfigError):
        build_method("dpo", values)


def test_fit_without_training_items_names_the_option():
    with pytest.raises(DetoxeditError, match="--train"):
        build_method("sft").fit(tiny_model("llama"), tiny_tokenizer(), [])


def test_config_fields_have_help():
    import dataclasses

    for name in ("sft", "dpo"):
        assert all(f.metadata.get("help") for f in dataclasses.fields(METHODS.get(name).config_class))


# ------------------------------------------------------------------ the deltas are the trained model


def test_lora_deltas_are_exactly_what_peft_merges_and_the_saved_model_reloads_to_the_same_replies(tmp_path):
    model, tok = sharp_llama(), tiny_tokenizer()
    method = build_method("sft", FAST | {"max_steps": 4, "lr": 3e-2})
    kept = KeepTrained()
    method.callbacks.append(kept)
    edit = method.fit(model, tok, items())
    merged = kept.model.merge_and_unload()
    with applied(model, edit.deltas):
        assert checksums(model) == checksums(merged)  # bit for bit (its replies are not compared: TRL
        expected = greedy(model, tok, items()[0].adversarial_prompt)  # patched the copy's forward and stop ids)
    assert expected != greedy(model, tok, items()[0].adversarial_prompt)  # the training changed this reply
    folder = save_edited_model(model, tok, edit, tmp_path / "saved", {"base_model": "tiny", "method": "sft"})
    reloaded, reloaded_tok = load_model(str(folder))
    assert greedy(reloaded, reloaded_tok, items()[0].adversarial_prompt) == expected


# ------------------------------------------------------------------ behaviour


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_sft_lowers_the_nll_of_the_safe_reply(lora):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    item = items(1)[0]
    edit = build_method("sft", FAST | {"lora": lora, "max_steps": 4, "lr": 1e-2}).fit(model, tok, [item])
    before = reply_logprob(model, tok, item, SAFE)
    with applied(model, edit.deltas):
        after = reply_logprob(model, tok, item, SAFE)
    assert after > before + 1.0  # log p(safe reply) up by more than one nat
    assert edit.losses[-1] < edit.losses[0]


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_dpo_raises_the_chosen_minus_rejected_margin_against_the_original_as_reference(lora):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    item = items(1)[0]
    edit = build_method("dpo", FAST | {"lora": lora, "max_steps": 4, "lr": 1e-2}).fit(model, tok, [item])

    def margin() -> float:
        return reply_logprob(model, tok, item, SAFE) - reply_logprob(model, tok, item, UNSAFE)

    before = margin()
    with applied(model, edit.deltas):
        after = margin()
    assert after > before + 1.0
    first = edit.info["log_history"][0]  # step 1: the policy is still the original, so it equals the reference
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-5) and first["rewards/rejected"] == pytest.approx(0, abs=1e-5)
    assert edit.losses[0] == pytest.approx(0.6931, abs=1e-4)  # -log sigmoid(0)
    assert ("adapter disabled" in edit.info["reference"]) == lora


def test_plain_format_for_a_tokenizer_without_chat_template_leaves_the_tokenizer_alone():
    model, tok = tiny_model("llama"), tiny_tokenizer(chat_template=False)
    tok.pad_token = None
    method = build_method("sft", FAST)
    fmt = ChatFormat(tok)
    (row,) = method.rows(fmt, items(1))
    assert row == {"prompt": fmt.render(items(1)[0].adversarial_prompt), "completion": " " + SAFE}
    edit = method.fit(model, tok, items())
    assert edit.info["chat_format"] == "plain" and edit.deltas
    assert tok.pad_token is None  # TRL set a pad token on its own copy only


def test_rows_use_the_generation_prompt_and_strip_the_replies():
    """SafeEdit's unsafe replies start with blank lines, which would merge with the template's newline."""
    tok = tiny_tokenizer()
    fmt = ChatFormat(tok)
    item = tiny_item(0, safe=" " + SAFE + "\n", unsafe="\n\n" + UNSAFE)
    (row,) = build_method("dpo").rows(fmt, [item])
    assert row["chosen"] == [{"role": "assistant", "content": SAFE}]
    assert row["rejected"] == [{"role": "assistant", "content": UNSAFE}]
    prompt_ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert prompt_ids["input_ids"] == fmt.encode(item.adversarial_prompt)  # what the runner generates from


# ------------------------------------------------------------------ resume


@pytest.mark.parametrize("name, lora", [("sft", True), ("dpo", False)], ids=["sft-lora", "dpo-full"])
def test_a_killed_fit_resumes_from_its_checkpoint_and_gives_the_uninterrupted_deltas(name, lora, tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    values = {"max_steps": 4, "save_steps": 2, "batch_size": 1, "lr": 1e-2, "lora": lora, "max_length": 256}
    reference = build_method(name, values)
    reference.work_dir = tmp_path / "reference"
    expected = reference.fit(model, tok, items(3))
    assert not (tmp_path / "reference" / CHECKPOINTS).exists()  # deleted once the deltas were taken

    killed = build_method(name, values)
    killed.work_dir = tmp_path / "killed"
    killed.callbacks.append(KillAfterSave(2))
    with pytest.raises(KeyboardInterrupt):
        killed.fit(model, tok, items(3))
    assert (tmp_path / "killed" / CHECKPOINTS / "checkpoint-2").is_dir()
    resumed = build_method(name, values)
    resumed.work_dir = tmp_path / "killed"
    edit = resumed.fit(model, tok, items(3))
    assert edit.info["resumed_from_step"] == 2 and edit.info["steps_this_call"] == 2 and edit.info["steps"] == 4
    assert edit.losses == expected.losses  # the log of the first two steps comes back from the checkpoint
    assert set(edit.deltas) == set(expected.deltas)
    for param_name, delta in edit.deltas.items():
        assert torch.equal(delta, expected.deltas[param_name]), param_name  # bit-exact on CPU


# ------------------------------------------------------------------ a whole run


@pytest.mark.parametrize("name, lora", [("sft", True), ("dpo", False)], ids=["sft-lora", "dpo-full"])
def test_a_run_fits_once_and_evaluates_every_item(name, lora, tmp_path, monkeypatch):
    """LoRA deltas are generated per row (linear weights); full fine-tuning's are applied around generation."""
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    data, train = tmp_path / "items.json", tmp_path / "train.json"
    data.write_text(json.dumps([tiny_item(i).to_json() for i in range(3)]), encoding="utf-8")
    train_items = [tiny_item(10 + i).to_json() for i in range(2)]
    for record in train_items:  # no overlap with the test items (the runner refuses that)
        record["question"] = f"How do I pick lock {record['id']}?"
    train.write_text(json.dumps(train_items), encoding="utf-8")
    cfg = RunConfig(data=str(data), train=str(train), method=name, method_config=FAST | {"lora": lora}, judge="refusal",
                    max_new_tokens=4, progress=False, bootstrap=20, items_per_batch=2)
    out = tmp_path / "run"
    run_protocol(cfg, out, model=sharp_llama(), tokenizer=tiny_tokenizer())
    assert [r["item_id"] for r in read_jsonl(out / "items.jsonl")] == [0, 1, 2]
    assert (out / "fitted_edit.pt").is_file() and not (out / "method" / CHECKPOINTS).exists()
    fitted = torch.load(out / "fitted_edit.pt", weights_only=True)
    info = json.loads(fitted["info"])
    assert info["method"] == name and info["lora"] == lora and info["steps"] == FAST["max_steps"]
    edited = [r for r in read_jsonl(out / "generations.jsonl") if r["variant"] == "edited"]
    assert len(edited) == 5 * 3
    fit = json.loads((out / "metrics.json").read_text())["fit"]  # the training cost Table 3 reports
    assert {key for key, _, _ in COST_KEYS} <= set(fit) and fit["examples"] == 2
