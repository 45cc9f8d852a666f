"""Figures of a run folder: where the edits went (located layers) and why (per-layer distances).

Drawn with matplotlib's Agg backend (no display needed), imported only when a figure is drawn.
The report embeds them; the coming mechanism analysis (toxic probe, region toxicity, activation
shift) adds its figures beside these.
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
