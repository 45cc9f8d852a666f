"""A judge candidate measured one fold at a time: a LoRA-fine-tuned classifier on the default model.

    .venv/bin/python benchmarks/judge_lora_fold.py [FOLD] [--epochs 1] [--limit N] [--sources NAME ...]
        FOLD: a fold of bench_judge.py's protocol (default loso:smollm_sampled); --limit: train on a seeded
        sample of N replies (a quick check; 0 = all); --sources: the label files, as in bench_judge.py
        (default `shipped`: the ten the shipped heads were fitted on, so the folds are the shipped recipe's)

The shipped judge's rendering (request as the user turn, reply as the assistant turn; GeneratorEncoder._row);
the model cut after block 24; LoRA (PEFT, r=8) on every linear layer of blocks 19-24; a linear head on
[mean reply state, state where the reply starts], the shipped head's context:24 + request:24. One epoch of
weighted binary cross-entropy (the shipped class weights, `sample_weights`), batches of 16 replies of similar
length, AdamW with warm-up and linear decay; then the fold's held-out replies are scored, with the refusal guard.
Prints the fold's recall, specificity, confusion counts and AUC; `bench_judge.py` prints the shipped head's on the
same fold.

A full leave-one-source-out run needs ten such fine-tunes, about 30 minutes each on this 2-core CPU, so only
some folds were run: the one where the shipped head fails most, then three more (docs/judges.md).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, LAYERS_KEPT, TUNED = 16, 24, range(18, 24)  # blocks 19-24, numbered from 1
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
LORA_LR, HEAD_LR, WARMUP = 2e-4, 1e-3, 20


def build(model):
    """The model cut after block 24 with LoRA on blocks 19-24, and a fresh linear head."""
    import torch
    from peft import LoraConfig, get_peft_model

    model.model.layers = model.model.layers[:LAYERS_KEPT]
    model.config.num_hidden_layers = LAYERS_KEPT
    targets = [f"layers.{layer}.{name}" for layer in TUNED for name in LINEARS]
    base = get_peft_model(model.model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets))
    return base, torch.nn.Linear(2 * model.config.hidden_size, 1)


def logits(base, head, rows, train: bool):
    """Head outputs for a right-padded batch: [mean reply state, state where the reply starts] per row."""
    import torch

    width = max(len(r.prefix) + len(r.reply) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for k, r in enumerate(rows):
        ids[k, :len(r.prefix) + len(r.reply)] = torch.tensor(r.prefix + r.reply)
        attention[k, :len(r.prefix) + len(r.reply)] = 1
    base.train(train)
    states = base(input_ids=ids, attention_mask=attention).last_hidden_state
    features = []
    for k, r in enumerate(rows):
        start, n = len(r.prefix), len(r.reply)
        reply = states[k, start:start + n].mean(0) if n else torch.zeros_like(states[k, 0])
        features.append(torch.cat([reply, states[k, start - 1]]))
    return head(torch.stack(features).float()).squeeze(-1)


def schedule(train: list[int], rows: dict, epochs: float, rng: random.Random) -> list[list[int]]:
    """Batches of similar length, shuffled each epoch."""
    order = sorted(train, key=lambda i: len(rows[i].prefix) + len(rows[i].reply))
    batches = [order[k:k + BATCH] for k in range(0, len(order), BATCH)]
    planned = []
    for _ in range(math.ceil(epochs)):
        shuffled = batches[:]
        rng.shuffle(shuffled)
        planned += shuffled
    return planned[:int(len(batches) * epochs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fold", nargs="?", default="loso:smollm_sampled")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--sources", nargs="+", default=["shipped"])
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "src")]
    import bench_judge
    import torch
    from sklearn.metrics import roc_auc_score

    from detoxedit.judges.features import GeneratorEncoder
    from detoxedit.judges.guard import apply_refusal_guard
    from detoxedit.judges.training import HeadConfig, agreement, sample_weights
    from detoxedit.judges.validation import protocol_folds

    torch.manual_seed(0)
    rng = random.Random(0)
    examples, pool, heldout, hand, refs = bench_judge.load_examples(ROOT / "data" / "labels", bench_judge.DEFAULT_DATA,
                                                                       args.sources)
    fold = next(f for f in protocol_folds(examples, pool, hand, refs, heldout) if f.name == args.fold)
    encoder = GeneratorEncoder()
    model, _ = encoder._load()
    rows = {i: encoder._row(examples[i].text, examples[i].prompt) for i in list(fold.train) + list(fold.test)}
    base, head = build(model)
    optimiser = torch.optim.AdamW([{"params": [p for p in base.parameters() if p.requires_grad], "lr": LORA_LR},
                                   {"params": head.parameters(), "lr": HEAD_LR}], weight_decay=0.01)
    train = rng.sample(list(fold.train), args.limit) if args.limit else list(fold.train)
    weight = dict(zip(train, sample_weights([examples[i] for i in train], HeadConfig())))
    batches = schedule(train, rows, args.epochs, rng)
    start = time.time()
    for step, batch in enumerate(batches):
        for group, rate in zip(optimiser.param_groups, (LORA_LR, HEAD_LR)):
            group["lr"] = rate * min(1.0, (step + 1) / WARMUP) * (1 - step / len(batches))
        out = logits(base, head, [rows[i] for i in batch], True)
        truth = torch.tensor([float(examples[i].label) for i in batch])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, truth, reduction="none")
        loss = (loss * torch.tensor([weight[i] for i in batch], dtype=torch.float)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 20 == 0:
            print(f"step {step}/{len(batches)} loss {loss.item():.3f} {time.time() - start:.0f} s", flush=True)
    test = list(fold.test)
    by_length = sorted(range(len(test)), key=lambda k: len(rows[test[k]].prefix) + len(rows[test[k]].reply))
    probabilities = [0.0] * len(test)
    with torch.no_grad():
        for k in range(0, len(by_length), BATCH):
            chosen = by_length[k:k + BATCH]
            values = torch.sigmoid(logits(base, head, [rows[test[j]] for j in chosen], False)).tolist()
            for j, value in zip(chosen, values):
                probabilities[j] = value
    scores = apply_refusal_guard([examples[i].text for i in test], probabilities)
    truth = [examples[i].label for i in test]
    counts = agreement(truth, [float(s >= 0.5) for s in scores])
    labelled = [k for k, v in enumerate(truth) if v in (0, 1)]
    area = roc_auc_score([truth[k] for k in labelled], [scores[k] for k in labelled])
    print(f"{args.fold}: recall {counts.recall:.3f}, specificity {counts.specificity:.3f}, {counts.as_dict()}, "
          f"AUC {area:.3f}, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
