"""`detoxedit analyze`: the mechanism analysis of one or more detoxified models against their base model.

Writes into its folder: `config.json` (what was asked, resolved), `probe.json` (the toxic probe and
its held-out accuracy), `mechanism.json` (every number), `mechanism.md` (tables, with the logit
lens), `mechanism_bars.png` (the paper's figure: region-toxicity change and activation shift per
method at the analysed layer) and `mechanism_profiles.png` (both per layer). `mechanism.py` defines
the quantities.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from detoxedit.analysis.detoxified import detoxified_deltas, parse_against
from detoxedit.analysis.mechanism import TOP_K, Reading, compare, read_model
from detoxedit.analysis.probe import PROBE_FILE, ToxicProbe, probe_examples, train_probe
from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text, check_writable_folder

logger = logging.getLogger(__name__)

LOCATE_ITEMS = 8  # items whose located layers vote for the analysed layer when none is given


@dataclass
class AnalysisConfig:
    """What `detoxedit analyze` reads and how (written, resolved, to the analysis folder)."""

    data: str
    against: list[str]
    model: str = "default"
    probe: str | None = None  # a saved probe.json; None: train one
    probe_data: list[str] = field(default_factory=list)  # labelled texts beside the data file's references
    data_root: str | None = None  # where data/labels/*.jsonl find the SafeEdit files they refer to
    layer: int | None = None  # None: a DINM delta's own layer, else the layer located most often
    limit: int | None = 40  # adversarial prompts averaged for the activations (a seeded sample)
    top_k: int = TOP_K
    chat_format: str = "auto"
    max_input_tokens: int | None = 1024
    seed: int = 0
    dtype: str = "float32"
    trust_remote_code: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.against:
            raise DetoxeditError("give at least one --against (a detoxified model, adapter, delta or run folder)")
        if self.limit is not None and self.limit < 1:
            raise DetoxeditError(f"--limit must be at least 1, got {self.limit}")
        if self.top_k < 1:
            raise DetoxeditError(f"--top-k must be at least 1, got {self.top_k}")


def run_analysis(cfg: AnalysisConfig, out: Path) -> dict[str, Any]:
    """Reads the base model and every `--against` variant; writes the folder described in the module docstring."""
    from detoxedit.data import load_safeedit
    from detoxedit.data.schema import sample_in_order
    from detoxedit.models import load_model

    items = sample_in_order(load_safeedit(cfg.data), cfg.limit, cfg.seed)
    labels = [parse_against(value) for value in cfg.against]
    _check_labels(labels)
    for path in cfg.probe_data:
        if not Path(path).is_file():
            raise DetoxeditError(f"--probe-data {path}: file not found")
    check_writable_folder(out)
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    variants = [(label, *detoxified_deltas(spec, model, trust_remote_code=cfg.trust_remote_code)) for label, spec in labels]
    probe = _probe(cfg, model, tokenizer, out)
    layer = resolve_layer(cfg, model, tokenizer, items, [meta for _, _, meta in variants])
    direction = probe.vector
    prompts = [item.adversarial_prompt for item in items]
    read = dict(chat=cfg.chat_format, max_input_tokens=cfg.max_input_tokens, progress=cfg.progress)
    logger.info("Reading the base model (%d adversarial prompts)", len(prompts))
    base = read_model(model, tokenizer, direction, prompts, **read)
    results = {}
    for label, deltas, meta in variants:
        logger.info("Reading %s (%d changed weights)", label, len(deltas))
        results[label] = _compare_variant(model, tokenizer, base, deltas, direction, prompts, layer, cfg.top_k, read)
        results[label]["method"] = meta.get("method")
    summary = {"layer": layer, "n_prompts": len(prompts), "probe": {"held_out": probe.held_out, "trained_on": probe.trained_on},
               "base_region_toxicity": base.region_toxicity, "methods": results}
    _write_outputs(summary, out)
    return summary


def _check_labels(labels: Sequence[tuple[str, str]]) -> None:
    seen = Counter(label for label, _ in labels)
    twice = [label for label, count in seen.items() if count > 1]
    if twice:
        raise DetoxeditError(f"--against: the label(s) {twice} name more than one model; name them LABEL=PATH")


def _probe(cfg: AnalysisConfig, model: nn.Module, tokenizer: Any, out: Path) -> ToxicProbe:
    """The saved probe (`--probe`), else one trained on the data file's references and `--probe-data`."""
    from detoxedit.models.adapter import get_adapter

    if cfg.probe:
        probe = ToxicProbe.load(cfg.probe, hidden_size=get_adapter(model).hidden_size)
    else:
        examples = probe_examples([cfg.data], cfg.probe_data, cfg.data_root)
        logger.info("Training the toxic probe on %d labelled texts", len(examples))
        probe = train_probe(model, tokenizer, examples, seed=cfg.seed, progress=cfg.progress)
    probe.save(out / PROBE_FILE)
    return probe


def resolve_layer(cfg: AnalysisConfig, model: nn.Module, tokenizer: Any, items: Sequence[Any],
                  metas: Sequence[dict[str, Any]]) -> int:
    """`--layer`; else the layer a DINM-style delta edited; else the layer located most often on a few items."""
    from detoxedit.locate import locate_toxic_layer
    from detoxedit.models.adapter import get_adapter

    layers = get_adapter(model).num_layers
    if cfg.layer is not None:
        if not 0 <= cfg.layer < layers:
            raise DetoxeditError(f"--layer {cfg.layer}: the model has layers 0..{layers - 1}")
        return cfg.layer
    recorded = [m.get("layer") for m in metas if isinstance(m.get("layer"), int)]
    if recorded:
        logger.info("Analysed layer %d: the layer the first --against edit changed", recorded[0])
        return recorded[0]
    votes = Counter(locate_toxic_layer(model, tokenizer, item, chat=cfg.chat_format,
                                       max_input_tokens=cfg.max_input_tokens).layer for item in items[:LOCATE_ITEMS])
    layer = votes.most_common(1)[0][0]
    logger.info("Analysed layer %d: located most often on %d items (%s)", layer, min(len(items), LOCATE_ITEMS), dict(votes))
    return layer


def _compare_variant(model: nn.Module, tokenizer: Any, base: Reading, deltas: dict[str, torch.Tensor],
                     direction: torch.Tensor, prompts: Sequence[str], layer: int, top_k: int,
                     read: dict[str, Any]) -> dict[str, Any]:
    from detoxedit.methods.base import applied

    with applied(model, deltas, context="analyze: "):
        edited = read_model(model, tokenizer, direction, prompts, **read)
        return compare(model, tokenizer, base, edited, direction, layer, top_k)


def _write_outputs(summary: dict[str, Any], out: Path) -> None:
    from detoxedit.analysis.figures import mechanism_bars, mechanism_profiles

    atomic_write_text(out / "mechanism.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "mechanism.md", mechanism_markdown(summary))
    mechanism_bars(summary, out / "mechanism_bars.png")
    mechanism_profiles(summary, out / "mechanism_profiles.png")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}%"


def mechanism_markdown(summary: dict[str, Any]) -> str:
    """The analysis as Markdown: one row per method at the analysed layer, then each method's logit lens."""
    probe = summary["probe"]
    held = probe.get("held_out") or {}
    accuracy = "not measured"
    if held.get("accuracy") is not None:
        accuracy = (f"{held['accuracy']:.3f} on {held['n']} held-out texts (recall on unsafe "
                    f"{_ratio(held.get('recall_unsafe'))}, specificity {_ratio(held.get('specificity'))})")
    lines = [f"# Mechanism analysis (layer {summary['layer']})", "",
             f"Toxic probe: trained on {probe['trained_on'].get('examples', '?')} labelled texts; accuracy {accuracy}. "
             f"Activations averaged over {summary['n_prompts']} adversarial prompts.", "",
             "| method | region toxicity (mean cos) before → after | change | activation shift | "
             "toxic neurons: cos change | toxic neurons: activation change | toxic write before → after | "
             "weight part | activation part |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, result in summary["methods"].items():
        row = result["layer"]
        region, neurons, write = row["region_toxicity"], row["toxic_neurons"], row["toxic_write"]
        lines.append(f"| {label} | {region['before']:.5f} → {region['after']:.5f} | {_pct(region['relative_change_pct'])} | "
                     f"{row['activation_shift_pct']:.2f}% | {_pct(neurons['cosine_relative_change_pct'])} | "
                     f"{_pct(neurons['activation_relative_change_pct'])} | {write['before']:.4f} → {write['after']:.4f} | "
                     f"{write['weight_part']:+.4f} | {write['activation_part']:+.4f} |")
    lines += ["", "Toxic write: the region's mean output projected on the toxic direction, d.(W a); after = before + "
              "weight part + activation part + interaction. Toxic neurons: the value vectors most aligned with the "
              "toxic direction in the original model.", ""]
    mean = abs(next(iter(summary["methods"].values()))["layer"]["region_toxicity"]["before"]) if summary["methods"] else 0
    if mean < 0.01:
        lines += [f"Note: the mean cosine at this layer is {mean:.5f} in size, close to 0, so its relative change is "
                  "large for a small absolute change; read the absolute values beside it.", ""]
    for label, result in summary["methods"].items():
        lines += [f"## Logit lens: {label}", "", "| neuron | cos before → after | norm change | promotes before | after |",
                  "|---|---|---|---|---|"]
        for row in result["logit_lens"]:
            lines.append(f"| {row['neuron']} | {row['cosine_before']:.3f} → {row['cosine_after']:.3f} | "
                         f"{_pct(row['norm_relative_change_pct'])} | {_tokens(row['tokens_before'])} | "
                         f"{_tokens(row['tokens_after'])} |")
        lines.append("")
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _tokens(tokens: Sequence[str]) -> str:
    return " ".join(f"`{t.strip() or repr(t)}`".replace("|", "\\|") for t in tokens)
