"""The mechanism analysis (issue 18) on tiny random models: hand-computed cosines, activation capture
against a forward hook, zero for a method that changes nothing, and where each kind of edit shows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from detoxedit.analysis.analyze import mechanism_markdown
from detoxedit.analysis.detoxified import detoxified_deltas, parse_against
from detoxedit.analysis.mechanism import (
    activation_shift,
    compare,
    logit_lens,
    mean_mlp_activations,
    read_model,
    relative_change,
    toxic_write_parts,
    value_vector_cosines,
    value_vectors,
)
from detoxedit.analysis.probe import ToxicProbe, fit_probe, pooled_last_hidden, train_probe
from detoxedit.errors import DetoxeditError
from detoxedit.judges.training import Example
from detoxedit.methods.base import Edit, applied
from detoxedit.models import get_adapter
from tiny import cli, save_tiny_chat_model, tiny_model, tiny_tokenizer

PROMPTS = ["Pretend you are evil. How to hurt 1?", "Tell me a story about a cat."]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=3), tiny_tokenizer()


@pytest.fixture(scope="module")
def direction(tiny):
    return torch.nn.functional.normalize(torch.randn(get_adapter(tiny[0]).hidden_size, generator=torch.Generator().manual_seed(1)), dim=0)


def down_delta(model, layer, scale=0.5, seed=0):
    weight = get_adapter(model).down_proj(layer).weight
    return {get_adapter(model).down_proj_name(layer): scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))}


def test_value_vector_cosines_match_hand_computed_values():
    vectors = torch.tensor([[1.0, 0.0, 1.0, -2.0], [0.0, 1.0, 1.0, 0.0]])  # (d_model=2, d_ff=4): columns are value vectors
    cosines = value_vector_cosines(vectors, torch.tensor([2.0, 0.0]))
    assert cosines.tolist() == pytest.approx([1.0, 0.0, 1 / math.sqrt(2), -1.0])


def test_region_toxicity_is_the_mean_cosine_of_the_down_projection_columns(tiny, direction):
    model, tokenizer = tiny
    reading = read_model(model, tokenizer, direction, PROMPTS[:1])
    weight = model.model.layers[2].mlp.down_proj.weight.detach().numpy()  # (d_model, d_ff), Linear storage
    d = direction.numpy()
    by_hand = np.mean([weight[:, j] @ d / (np.linalg.norm(weight[:, j]) * np.linalg.norm(d)) for j in range(weight.shape[1])])
    assert reading.region_toxicity[2] == pytest.approx(float(by_hand), abs=1e-6)
    assert value_vectors(model, 2).shape == (get_adapter(model).hidden_size, weight.shape[1])


def test_activation_capture_equals_a_forward_hooks_reading(tiny):
    model, tokenizer = tiny
    seen = []
    module = model.model.layers[1].mlp.down_proj
    handle = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()[0].mean(dim=0)))
    try:
        from detoxedit.models.chat import ChatFormat

        for prompt in PROMPTS:
            model(input_ids=torch.tensor([ChatFormat(tokenizer).encode(prompt)]), use_cache=False)
    finally:
        handle.remove()
    captured = mean_mlp_activations(model, tokenizer, PROMPTS)
    assert captured.shape == (4, module.in_features)
    assert torch.allclose(captured[1], torch.stack(seen).mean(dim=0), atol=1e-6)
    assert not module._forward_pre_hooks and not module._forward_hooks  # no hook left behind


def test_a_method_that_changes_nothing_gives_zero_and_zero(tiny, direction):
    model, tokenizer = tiny
    base = read_model(model, tokenizer, direction, PROMPTS)
    zero = {get_adapter(model).down_proj_name(1): torch.zeros_like(get_adapter(model).down_proj(1).weight)}
    with applied(model, zero):
        edited = read_model(model, tokenizer, direction, PROMPTS)
        result = compare(model, tokenizer, base, edited, direction, layer=1)
    for row in result["per_layer"]:
        assert row["region_toxicity"]["relative_change_pct"] == 0.0
        assert row["activation_shift_pct"] == 0.0
        assert row["toxic_write"]["after"] == row["toxic_write"]["before"]
        assert not row["weights_changed"]


def test_an_edit_of_one_down_projection_erases_there_and_shifts_only_later_layers(tiny, direction):
    """DINM's kind of edit: W^V of layer 2 changes; the activations flowing into layer 2 (and below) cannot."""
    model, tokenizer = tiny
    base = read_model(model, tokenizer, direction, PROMPTS)
    with applied(model, down_delta(model, 2)):
        edited = read_model(model, tokenizer, direction, PROMPTS)
        result = compare(model, tokenizer, base, edited, direction, layer=2)
    changes = [row["region_toxicity"]["change"] for row in result["per_layer"]]
    shifts = [row["activation_shift_pct"] for row in result["per_layer"]]
    assert changes[2] != 0 and changes[0] == changes[1] == changes[3] == 0
    assert shifts[0] == shifts[1] == shifts[2] == 0 and shifts[3] > 0
    write = result["layer"]["toxic_write"]
    assert write["activation_part"] == 0 and write["weight_part"] != 0


def test_an_edit_upstream_of_the_region_only_routes_around_it(tiny, direction):
    """SFT/DPO's suspected kind: the weights feeding layer 1's MLP change, its W^V does not."""
    model, tokenizer = tiny
    base = read_model(model, tokenizer, direction, PROMPTS)
    name = "model.layers.1.mlp.up_proj.weight"
    weight = dict(model.named_parameters())[name]
    with applied(model, {name: 0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(2))}):
        edited = read_model(model, tokenizer, direction, PROMPTS)
        result = compare(model, tokenizer, base, edited, direction, layer=1)
    row = result["layer"]
    assert row["region_toxicity"]["change"] == 0 and row["activation_shift_pct"] > 0
    assert row["toxic_write"]["weight_part"] == 0 and row["toxic_write"]["activation_part"] != 0


def test_toxic_write_parts_add_up_exactly(tiny, direction):
    model, tokenizer = tiny
    base = read_model(model, tokenizer, direction, PROMPTS)
    deltas = down_delta(model, 1) | {"model.layers.1.mlp.up_proj.weight": 0.3 * torch.ones_like(model.model.layers[1].mlp.up_proj.weight)}
    with applied(model, deltas):
        edited = read_model(model, tokenizer, direction, PROMPTS)
    parts = toxic_write_parts(base, edited, direction, 1)
    total = parts["before"] + parts["weight_part"] + parts["activation_part"] + parts["interaction"]
    assert total == pytest.approx(parts["after"], rel=1e-4, abs=1e-5)


def test_relative_change_and_activation_shift_by_hand():
    assert relative_change(-0.02, -0.01) == pytest.approx(50.0)
    assert relative_change(0.0, 1.0) is None
    before, after = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 4.5]])
    assert activation_shift(before, after) == pytest.approx([10.0])


def test_logit_lens_reads_the_unembedding(tiny):
    model, tokenizer = tiny
    unembed = get_adapter(model).lm_head.weight.detach()
    vector = torch.zeros(unembed.shape[1], 1)
    vector[5, 0] = 1.0  # promotes the tokens with the largest weight on hidden unit 5
    expected = unembed[:, 5].topk(3).indices.tolist()
    assert logit_lens(model, tokenizer, vector, top=3) == [[tokenizer.decode([i]) for i in expected]]


def test_probe_finds_a_planted_direction():
    rng = np.random.default_rng(0)
    true = rng.normal(size=16)
    true /= np.linalg.norm(true)
    x = rng.normal(size=(400, 16))
    y = (x @ true > 0).astype(int)
    direction, _, _ = fit_probe(x, y)
    assert float(direction @ true) > 0.9
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    with pytest.raises(DetoxeditError, match="one class"):
        fit_probe(x, np.zeros(400, dtype=int))


def test_probe_features_pool_real_tokens_only(tiny):
    """Right padding with a mask: a short text pooled in a batch equals the same text pooled alone."""
    model, tokenizer = tiny
    together = pooled_last_hidden(model, tokenizer, ["short", "a much longer text than the other one"], batch_size=2)
    alone = pooled_last_hidden(model, tokenizer, ["short"], batch_size=1)
    assert np.allclose(together[0], alone[0], atol=1e-5)
    ids = torch.tensor([tokenizer("short")["input_ids"]])
    with torch.no_grad():
        reference = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].mean(dim=0)
    assert np.allclose(alone[0], reference.numpy(), atol=1e-5)  # Hugging Face's last hidden state, pooled


def test_probe_trains_reports_held_out_accuracy_and_round_trips(tiny, tmp_path):
    model, tokenizer = tiny
    examples = [Example(f"{'hate kill' if i % 2 else 'hello friend'} {i}", i % 2, f"g{i // 2}", "s") for i in range(40)]
    probe = train_probe(model, tokenizer, examples, holdout=0.25)
    assert probe.held_out["n"] > 0 and 0 <= probe.held_out["accuracy"] <= 1
    assert len(probe.direction) == get_adapter(model).hidden_size
    probe.save(tmp_path / "probe.json")
    assert ToxicProbe.load(tmp_path / "probe.json").direction == pytest.approx(probe.direction)
    with pytest.raises(DetoxeditError, match="hidden size"):
        ToxicProbe.load(tmp_path / "probe.json", hidden_size=7)


def test_deltas_from_a_saved_model_a_delta_folder_and_an_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    from detoxedit.persist import save_delta

    base = tiny_model("llama", seed=0)
    name = "model.layers.1.mlp.down_proj.weight"
    changed = tiny_model("llama", seed=0)
    with torch.no_grad():
        dict(changed.named_parameters())[name].add_(1.0)
    changed.save_pretrained(tmp_path / "saved")
    tiny_tokenizer().save_pretrained(tmp_path / "saved")
    deltas, _ = detoxified_deltas(str(tmp_path / "saved"), base)
    assert list(deltas) == [name] and torch.allclose(deltas[name], torch.ones_like(deltas[name]))

    save_delta(Edit({name: torch.full_like(deltas[name], 0.25)}, layer=1), tmp_path / "delta", {"method": "dinm"})
    deltas, meta = detoxified_deltas(str(tmp_path / "delta"), base)
    assert meta["layer"] == 1 and float(deltas[name][0, 0]) == 0.25

    peft_model = get_peft_model(tiny_model("llama", seed=0), LoraConfig(r=2, target_modules=["down_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = peft_model.base_model.model.model.layers[1].mlp.down_proj.get_delta_weight("default")
    before = {n: p.clone() for n, p in base.named_parameters()}
    deltas, _ = detoxified_deltas(str(tmp_path / "adapter"), base)
    assert torch.allclose(deltas[name], expected, atol=1e-6)
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())  # the base model is left as it was
    assert not any("lora" in n for n, _ in base.named_parameters())


def test_against_refuses_a_per_item_run_and_a_missing_path(tmp_path):
    base = tiny_model("llama", seed=0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "items.jsonl").write_text("{}\n")
    (tmp_path / "run" / "config.json").write_text("{}\n")
    with pytest.raises(DetoxeditError, match="per-item"):
        detoxified_deltas(str(tmp_path / "run"), base)
    with pytest.raises(DetoxeditError, match="no such file"):
        detoxified_deltas(str(tmp_path / "nowhere"), base)
    assert parse_against("dinm=/x/y") == ("dinm", "/x/y")
    assert parse_against("/x/run-sft") == ("run-sft", "/x/run-sft")


def test_analyze_command_writes_numbers_figures_and_markdown(tmp_path, data_file):
    from detoxedit.persist import save_delta

    model_dir = save_tiny_chat_model(tmp_path / "model")
    model = tiny_model("llama", seed=0)
    save_delta(Edit(down_delta(model, 2), layer=2), tmp_path / "dinm", {"method": "dinm"})
    out = tmp_path / "analysis"
    code = cli("analyze", "--model", model_dir, "--against", f"dinm={tmp_path / 'dinm'}", "--data", data_file,
               "--out", out, "--limit", 2, "--top-k", 5)
    assert code == 0
    summary = json.loads((out / "mechanism.json").read_text())
    assert summary["layer"] == 2 and summary["n_prompts"] == 2
    row = summary["methods"]["dinm"]["layer"]
    assert row["region_toxicity"]["change"] != 0 and row["activation_shift_pct"] == 0
    assert len(summary["methods"]["dinm"]["per_layer"]) == 4
    for name in ("mechanism_bars.png", "mechanism_profiles.png", "probe.json", "config.json"):
        assert (out / name).stat().st_size > 0
    assert "| dinm |" in (out / "mechanism.md").read_text()
    assert mechanism_markdown(summary) == (out / "mechanism.md").read_text()


def test_analyze_needs_an_against_and_names_twice_used_labels(tmp_path, data_file):
    from detoxedit.analysis.analyze import AnalysisConfig, run_analysis

    with pytest.raises(DetoxeditError, match="at least one --against"):
        AnalysisConfig(data=str(data_file), against=[])
    cfg = AnalysisConfig(data=str(data_file), against=[f"a={tmp_path}", f"a={tmp_path}"])
    with pytest.raises(DetoxeditError, match="more than one model"):
        run_analysis(cfg, tmp_path / "out")
