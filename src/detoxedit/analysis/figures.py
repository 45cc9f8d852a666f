"""Figures of a run folder: where the edits went (located layers) and why (per-layer distances).

Drawn with matplotlib's Agg backend (no display needed), imported only when a figure is drawn.
The report embeds them; `detoxedit analyze` draws the mechanism analysis's figures (region
toxicity change and activation shift per method, and per layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def layer_histogram(items: list[dict[str, Any]], path: Path) -> bool:
    """Bar chart of located (edited) layers; False when no item recorded a layer."""
    layers = [r["layer"] for r in items if r.get("layer") is not None]
    if not layers:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    values = sorted(set(layers))
    ax.bar(values, [layers.count(v) for v in values], color="#4c72b0")
    ax.set_xlabel("located layer")
    ax.set_ylabel("items")
    ax.set_title("Toxic layer located per item")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def distance_profile(items: list[dict[str, Any]], path: Path) -> bool:
    """Mean (± std) per-layer distance between safe and unsafe hidden states, from `Edit.info["distances"]`."""
    import numpy as np

    profiles = [r["info"]["distances"] for r in items if isinstance(r.get("info"), dict) and r["info"].get("distances")]
    profiles = [p for p in profiles if len(p) == len(profiles[0])] if profiles else []
    if not profiles:
        return False
    data = np.asarray(profiles, dtype=float)  # (items, layers)
    mean, std = data.mean(axis=0), data.std(axis=0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    layers = np.arange(data.shape[1])
    ax.plot(layers, mean, marker="o", color="#c44e52")
    ax.fill_between(layers, mean - std, mean + std, alpha=0.2, color="#c44e52")
    ax.set_xlabel("layer")
    ax.set_ylabel("distance (safe vs unsafe)")
    ax.set_title(f"Per-layer distance profile (mean ± std over {len(profiles)} items)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def mechanism_bars(summary: dict[str, Any], path: Path) -> None:
    """The paper's figure, per method at the analysed layer: the region's toxicity change and the activation
    shift; plus the toxic write's change split into its weight part (erasing) and activation part (routing)."""
    labels = list(summary["methods"])
    rows = [summary["methods"][label]["layer"] for label in labels]
    toxicity = [r["region_toxicity"]["relative_change_pct"] or 0.0 for r in rows]
    shift = [r["activation_shift_pct"] for r in rows]
    scale = [abs(r["toxic_write"]["before"]) or 1.0 for r in rows]
    weight = [100 * r["toxic_write"]["weight_part"] / s for r, s in zip(rows, scale)]
    activation = [100 * r["toxic_write"]["activation_part"] / s for r, s in zip(rows, scale)]
    plt = _pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.6))
    left.bar(labels, toxicity, color="#c44e52")
    left.set_ylabel("change (%)")
    left.set_title("Toxicity of the region (mean cosine)", fontsize=10)
    middle.bar(labels, shift, color="#4c72b0")
    middle.set_ylabel("shift (%)")
    middle.set_title("Activation shift into the region", fontsize=10)
    x = range(len(labels))
    right.bar([i - 0.2 for i in x], weight, width=0.4, color="#c44e52", label="weight part (erase)")
    right.bar([i + 0.2 for i in x], activation, width=0.4, color="#4c72b0", label="activation part (route)")
    right.set_xticks(list(x), labels)
    right.set_ylabel("% of |d.(W a)| before")
    right.set_title("Change of what the region writes\nalong the toxic direction", fontsize=10)
    right.legend(fontsize=7)
    for ax in (left, middle, right):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"Layer {summary['layer']}: does a method erase the toxic region or route around it?", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def mechanism_profiles(summary: dict[str, Any], path: Path) -> None:
    """Both quantities per layer, one line per method (the analysed layer marked)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.4), sharex=True)
    for label, result in summary["methods"].items():
        layers = [r["layer"] for r in result["per_layer"]]
        top.plot(layers, [r["region_toxicity"]["change"] for r in result["per_layer"]], marker=".", label=label)
        bottom.plot(layers, [r["activation_shift_pct"] for r in result["per_layer"]], marker=".", label=label)
    for ax in (top, bottom):
        ax.axvline(summary["layer"], color="grey", linestyle=":", linewidth=1)
    top.axhline(0, color="black", linewidth=0.8)
    top.set_ylabel("region toxicity change\n(mean cosine, after - before)")
    bottom.set_ylabel("activation shift (%)")
    bottom.set_xlabel("layer")
    top.legend(fontsize=8)
    top.set_title("Per-layer profile of each method")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _pyplot():
    """matplotlib with the Agg backend (no display needed), imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """PNG bytes rendered in memory, then written atomically (a killed report leaves no half image)."""
    import io

    from detoxedit.files import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
