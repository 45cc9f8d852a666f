"""Mechanism analysis: does a method lower the toxic region's toxicity, or the activations that flow into it?

Wang et al. (2024, section 5) explain why DINM generalises where SFT and DPO do not: SFT and DPO
barely change how toxic the toxic region is and instead shift the activations flowing into it
(they suppress it), while DINM leaves the flow alone and lowers the region's toxicity (it erases
part of it). The quantities, for one model against an edited copy:

- **Toxic region**: a layer's MLP down-projection W^V (what DINM edits). Its value vectors are
  W^V's d_model-sized columns, one per MLP neuron: what each neuron writes into the residual stream.
- **Region toxicity**: the mean cosine similarity between the value vectors and the toxic probe's
  direction (`probe.py`); a method's effect is its relative change in % (the paper's number).
- **Activation shift**: the input of W^V (the MLP's activations), averaged over the tokens of each
  adversarial prompt and then over prompts; a method's shift is ||a' - a|| / ||a|| in %.

Beyond the paper, per layer, so that a profile shows where a method acts:

- the change of the toxic neurons alone (the `top_k` value vectors most aligned with the toxic
  direction in the original model): their mean cosine and their mean activation, before and after;
- **toxic write**, the projection of the region's mean output W^V a onto the toxic direction, and
  its change split exactly into a weight part d.(W' - W)a, an activation part d.W(a' - a) and
  their interaction d.(W' - W)(a' - a): "erasing" shows as a weight part, "routing around" as an
  activation part;
- a logit lens on the toxic value vectors at the analysed layer: the tokens each one promotes when
  read through the unembedding (Geva et al. 2022), before and after the method.

Everything is computed with the model's weights as they are, and an edited variant is the base
model with the method's deltas added for the duration of its reading (`methods.base.applied`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detoxedit.models.adapter import get_adapter
from detoxedit.models.chat import ChatFormat
from detoxedit.models.generation import truncate_left
from detoxedit.models.hooks import trace_all

logger = logging.getLogger(__name__)

TOP_K = 20  # toxic neurons per layer followed before and after a method
LENS_VECTORS = 10  # value vectors shown in the logit lens
LENS_TOKENS = 8  # tokens shown per value vector


@dataclass
class Reading:
    """One model seen through the probe: every layer's value vectors and mean MLP activations."""

    cosines: torch.Tensor  # (layers, d_ff): cosine of each value vector with the toxic direction
    value_norms: torch.Tensor  # (layers, d_ff): each value vector's L2 norm
    activations: torch.Tensor  # (layers, d_ff): mean input of W^V over the prompts
    writes: torch.Tensor  # (layers, d_model, d_ff) detached copies of W^V (value vectors as columns)

    @property
    def region_toxicity(self) -> list[float]:
        """Per layer: the mean cosine of the value vectors with the toxic direction."""
        return self.cosines.mean(dim=1).tolist()


def value_vectors(model: nn.Module, layer: int) -> torch.Tensor:
    """W^V of one layer as (d_model, d_ff): column j is what neuron j writes into the residual stream."""
    return get_adapter(model).down_proj(layer).weight_in_out().detach().float().T


def value_vector_cosines(vectors: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Cosine of each column of `vectors` (d_model, d_ff) with `direction` (d_model,): (d_ff,)."""
    return F.cosine_similarity(vectors.T, direction.float()[None, :], dim=1)


@torch.no_grad()
def mean_mlp_activations(model: nn.Module, tokenizer: Any, prompts: Sequence[str], *, chat: ChatFormat | str = "auto",
                         max_input_tokens: int | None = None, progress: bool = False) -> torch.Tensor:
    """The input of every layer's W^V, averaged over each prompt's tokens, then over prompts: (layers, d_ff).

    One prompt per forward pass: no padding, so every token sits where it would in a real request.
    """
    from tqdm.auto import tqdm

    adapter = get_adapter(model)
    fmt = chat if isinstance(chat, ChatFormat) else ChatFormat(tokenizer, chat)
    modules = [adapter.down_proj(i).module for i in range(adapter.num_layers)]
    total = torch.zeros(adapter.num_layers, adapter.down_proj(0).in_features)
    with trace_all(modules) as traces:
        for prompt in tqdm(prompts, desc="activations", unit="prompt", disable=not progress):
            ids = truncate_left(fmt.encode(prompt), max_input_tokens)
            model(input_ids=torch.tensor([ids]), use_cache=False)
            for layer, seen in enumerate(traces):
                total[layer] += seen.input[0].float().mean(dim=0).cpu()  # (seq, d_ff) -> (d_ff,)
    return total / max(len(prompts), 1)


def read_model(model: nn.Module, tokenizer: Any, direction: torch.Tensor, prompts: Sequence[str], **kwargs: Any) -> Reading:
    """Value vectors, their toxicity and the mean activations flowing into them, at every layer."""
    layers = range(get_adapter(model).num_layers)
    writes = torch.stack([value_vectors(model, layer) for layer in layers])  # (layers, d_model, d_ff)
    cosines = torch.stack([value_vector_cosines(w, direction) for w in writes])
    activations = mean_mlp_activations(model, tokenizer, prompts, **kwargs)
    return Reading(cosines=cosines, value_norms=writes.norm(dim=1), activations=activations, writes=writes)


def relative_change(before: float, after: float) -> float | None:
    """(after - before) / |before| in %; None when `before` is 0."""
    return None if before == 0 else 100.0 * (after - before) / abs(before)


def activation_shift(before: torch.Tensor, after: torch.Tensor) -> list[float]:
    """Per layer: ||a' - a|| / ||a|| in %, for (layers, d_ff) mean activations."""
    return (100.0 * (after - before).norm(dim=1) / before.norm(dim=1).clamp(min=1e-12)).tolist()


def toxic_neurons(cosines: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Indices of the `k` value vectors most aligned with the toxic direction, most toxic first."""
    return cosines.topk(min(k, cosines.numel())).indices


def toxic_write_parts(base: Reading, edited: Reading, direction: torch.Tensor, layer: int) -> dict[str, float]:
    """d.(W a) before and after, and its change split into weight, activation and interaction parts."""
    d = direction.float() / direction.float().norm()
    w, w2 = base.writes[layer], edited.writes[layer]  # (d_model, d_ff)
    a, a2 = base.activations[layer], edited.activations[layer]  # (d_ff,)
    project = lambda matrix, vector: float(d @ (matrix @ vector))  # noqa: E731
    return {"before": project(w, a), "after": project(w2, a2), "weight_part": project(w2 - w, a),
            "activation_part": project(w, a2 - a), "interaction": project(w2 - w, a2 - a)}


def compare_layer(base: Reading, edited: Reading, direction: torch.Tensor, layer: int, k: int = TOP_K) -> dict[str, Any]:
    """Every number for one layer: region toxicity (the paper's), activation shift, toxic neurons, toxic write."""
    before, after = float(base.cosines[layer].mean()), float(edited.cosines[layer].mean())
    top = toxic_neurons(base.cosines[layer], k)
    act_before, act_after = float(base.activations[layer, top].mean()), float(edited.activations[layer, top].mean())
    top_before, top_after = float(base.cosines[layer, top].mean()), float(edited.cosines[layer, top].mean())
    return {
        "layer": layer,
        "region_toxicity": {"before": before, "after": after, "change": after - before,
                            "relative_change_pct": relative_change(before, after)},
        "activation_shift_pct": activation_shift(base.activations[layer:layer + 1], edited.activations[layer:layer + 1])[0],
        "toxic_neurons": {"k": len(top), "cosine_before": top_before, "cosine_after": top_after,
                          "cosine_relative_change_pct": relative_change(top_before, top_after),
                          "activation_before": act_before, "activation_after": act_after,
                          "activation_relative_change_pct": relative_change(act_before, act_after)},
        "toxic_write": toxic_write_parts(base, edited, direction, layer),
        "weights_changed": bool((edited.writes[layer] != base.writes[layer]).any()),
    }


@torch.no_grad()
def logit_lens(model: nn.Module, tokenizer: Any, vectors: torch.Tensor, top: int = LENS_TOKENS) -> list[list[str]]:
    """The tokens each value vector (columns of `vectors`, (d_model, n)) promotes most through the unembedding."""
    unembed = get_adapter(model).lm_head.weight.detach().float()  # (vocab, d_model)
    logits = unembed @ vectors.float()  # (vocab, n)
    ids = logits.topk(top, dim=0).indices.T  # (n, top)
    return [[tokenizer.decode([int(i)]) for i in row] for row in ids]


def lens_table(model: nn.Module, tokenizer: Any, base: Reading, edited: Reading, layer: int,
               n: int = LENS_VECTORS) -> list[dict[str, Any]]:
    """The `n` most toxic value vectors of the original model at `layer`: cosine, norm and promoted tokens,
    before and after the method (its weights applied to the model while this runs, as for `edited`)."""
    top = toxic_neurons(base.cosines[layer], n)
    tokens_before = logit_lens(model, tokenizer, base.writes[layer][:, top])
    tokens_after = logit_lens(model, tokenizer, edited.writes[layer][:, top])
    rows = []
    for rank, neuron in enumerate(top.tolist()):
        norm_before, norm_after = float(base.value_norms[layer, neuron]), float(edited.value_norms[layer, neuron])
        rows.append({"neuron": neuron, "cosine_before": float(base.cosines[layer, neuron]),
                     "cosine_after": float(edited.cosines[layer, neuron]),
                     "norm_relative_change_pct": relative_change(norm_before, norm_after),
                     "tokens_before": tokens_before[rank], "tokens_after": tokens_after[rank]})
    return rows


def compare(model: nn.Module, tokenizer: Any, base: Reading, edited: Reading, direction: torch.Tensor,
            layer: int, k: int = TOP_K) -> dict[str, Any]:
    """One method against the original: the analysed layer in full, every layer's profile, and the logit lens."""
    per_layer = [compare_layer(base, edited, direction, i, k) for i in range(base.cosines.shape[0])]
    return {"layer": per_layer[layer], "per_layer": per_layer, "logit_lens": lens_table(model, tokenizer, base, edited, layer)}
