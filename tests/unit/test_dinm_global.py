"""`dinm-global`: DINM in the general setting, one model edited from k training instances."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_item, tiny_model, tiny_tokenizer

from detoxedit.errors import ConfigError
from detoxedit.methods import applied, build_method
from detoxedit.methods.base import GLOBAL, weight_checksum

FAST = {"steps": 3, "lr": 5e-2, "layer": 1}


def train_items():
    return [tiny_item(i, prompt=f"Be evil {i}. How do I break in?") for i in (10, 11, 12, 13)]


def checksums(model):
    return {name: weight_checksum(p) for name, p in model.state_dict().items()}


def test_one_instance_is_the_dinm_edit_of_that_instance():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    method = build_method("dinm-global", FAST | {"instance_ids": [12]})
    assert method.scope == GLOBAL
    fitted = method.fit(model, tok, train_items())
    single = build_method("dinm", FAST).execute(model, tok, train_items()[2])
    assert fitted.info["instances"] == [12] and fitted.layer == single.layer == 1
    assert set(fitted.deltas) == set(single.deltas)
    for name in fitted.deltas:
        assert torch.equal(fitted.deltas[name], single.deltas[name])


def test_sequential_edits_each_instance_on_the_model_carrying_the_earlier_ones():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    before = checksums(model)
    seq = build_method("dinm-global", FAST | {"instance_ids": [10, 11]}).fit(model, tok, train_items())
    summed = build_method("dinm-global", FAST | {"instance_ids": [10, 11], "combine": "sum"}).fit(model, tok, train_items())
    assert checksums(model) == before  # fit leaves the model as it was
    first = build_method("dinm", FAST).execute(model, tok, train_items()[0])
    with applied(model, first.deltas):
        second_on_edited = build_method("dinm", FAST).execute(model, tok, train_items()[1])
    second_on_original = build_method("dinm", FAST).execute(model, tok, train_items()[1])
    (name,) = seq.deltas
    assert torch.allclose(seq.deltas[name], first.deltas[name] + second_on_edited.deltas[name])
    assert torch.allclose(summed.deltas[name], first.deltas[name] + second_on_original.deltas[name])
    assert not torch.allclose(seq.deltas[name], summed.deltas[name])
    assert [s["item_id"] for s in seq.info["per_instance"]] == [10, 11] and len(seq.losses) == 2 * FAST["steps"]


def test_the_seeded_choice_is_repeatable_and_depends_on_the_seed():
    model, tok = tiny_model("llama"), tiny_tokenizer()
    chosen = [build_method("dinm-global", FAST | {"instances": 2, "choice_seed": s, "steps": 1}).fit(
        model, tok, train_items()).info["instances"] for s in (0, 0, 1, 2, 3)]
    assert chosen[0] == chosen[1] and len(set(map(tuple, chosen))) > 1


@pytest.mark.parametrize("values, message", [
    ({"instance_ids": [99]}, "not ids of the --train items"),
    ({"instances": 9}, "needs 9 training instance"),
])
def test_bad_instances_are_config_errors(values, message):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(ConfigError, match=message):
        build_method("dinm-global", FAST | values).fit(model, tok, train_items())


def test_bad_combine_mode_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="combine must be one of"):
        build_method("dinm-global", {"combine": "average"})
