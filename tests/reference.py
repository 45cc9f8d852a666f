"""DINM in one screen: the plain reference the fast implementation is tested (and benchmarked) against.

Whole-model forwards, the model's own weight trained in place, no cached prefix, no hooks: what the
paper describes and a reader can check line by line. `tests/unit/test_reference.py` asserts that
`detoxedit`'s DINM gives the same layer and the same delta; `benchmarks/bench_runner.py` times it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from detoxedit.models.generation import truncate_left


def plain_locate(model, fmt, item, max_input_tokens: int | None) -> int:
    """Whole-model forward of prompt+safe and prompt+unsafe; the layer whose mean reply states differ most."""
    prompt = truncate_left(fmt.encode(item.adversarial_prompt), max_input_tokens)
    rows = [prompt + fmt.encode_reply(r) for r in (item.safe_generation, item.unsafe_generation)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # (2, width), right padded
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states[1:]
    spans = [slice(len(prompt), len(r)) for r in rows]
    distances = [float((h[0, spans[0]].float().mean(0) - h[1, spans[1]].float().mean(0)).norm()) for h in states]
    return int(torch.tensor(distances).argmax())


def encode_pair(fmt, message: str, reply: str, max_input_tokens: int | None) -> tuple[torch.Tensor, int]:
    prompt, target = truncate_left(fmt.encode(message), max_input_tokens), fmt.encode_reply(reply)
    return torch.tensor([prompt + target]), len(target)  # (1, seq), target length


def plain_dinm(model, param: torch.nn.Parameter, edit, kl, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on the model's own weight, whole model forward/backward per step.

    Returns (W' - W, saved W); the model is left edited, as the reference leaves it until restore.
    """
    original = param.detach().clone()
    (edit_ids, edit_len), (kl_ids, kl_len) = edit, kl
    with torch.no_grad():
        base = F.log_softmax(model(input_ids=kl_ids, use_cache=False).logits[:, -kl_len - 1:-1].float(), -1)
    param.requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=cfg.lr, weight_decay=0.0)
    for _ in range(cfg.steps):
        logits = model(input_ids=edit_ids, use_cache=False).logits[:, -edit_len - 1:-1].float()  # (1, target, vocab)
        nll = F.cross_entropy(logits.flatten(0, 1), edit_ids[:, -edit_len:].flatten())
        edited = F.log_softmax(model(input_ids=kl_ids, use_cache=False).logits[:, -kl_len - 1:-1].float(), -1)
        loss = cfg.c_edit * nll + cfg.kl_weight * (base.exp() * (base - edited)).sum(-1).mean()
        if cfg.loss_threshold is not None and loss.item() < cfg.loss_threshold:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if cfg.norm_constraint is not None:
            with torch.no_grad():
                param.copy_(torch.clamp(param, original - cfg.norm_constraint, original + cfg.norm_constraint))
    param.requires_grad_(False)
    param.grad = None
    return (param.detach() - original).clone(), original
