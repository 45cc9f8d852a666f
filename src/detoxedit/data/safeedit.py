"""Load, filter, sample and save SafeEdit items from a file or the Hugging Face Hub.

Users point us at their own copy of SafeEdit (the full release is gated), so the loader
accepts the release's JSON list, a JSONL variant, or ``hf:<dataset id>:<split>``. Every
source goes through the same validation, which reports all bad items at once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from detoxedit.data.schema import (
    UNSAFE_CATEGORIES,
    DataError,
    RawRecord,
    SafeEditItem,
    build_items,
    read_records,
    safeedit_problems,
    sample_in_order,
)

logger = logging.getLogger(__name__)

HF_PREFIX = "hf:"


def load_safeedit(
    source: str | Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    categories: Sequence[str] | None = None,
    attack_names: Sequence[str] | None = None,
) -> list[SafeEditItem]:
    """Load SafeEdit items, validated, filtered, then optionally sampled.

    Filters apply before ``limit``, so ``limit=10, categories=["mental harm"]`` gives ten
    mental-harm items. The sample is drawn with ``random.Random(seed)`` but returned in file
    order: the same file, filters, limit and seed always give the same items.

    Args:
        source: a JSON list file, a JSONL file, or ``hf:<dataset id>:<split>``
            (e.g. ``hf:zjunlp/SafeEdit:test``; needs the ``datasets`` package and access).
        limit: how many items to keep; ``None`` or more than available keeps all.
        seed: seed of the sample drawn when ``limit`` is smaller than the item count.
        categories: unsafety categories to keep, matched case-insensitively.
        attack_names: attack names to keep, matched case-insensitively.

    Raises:
        DataError: the source cannot be read, or any item is invalid (all are listed).
    """
    records, name = _read_source(source)
    items = build_items(records, name, safeedit_problems, SafeEditItem.from_json)
    warn_unknown_categories(items, name)
    kept = filter_items(items, categories=categories, attack_names=attack_names)
    chosen = sample_in_order(kept, limit, seed)
    logger.info("Loaded %d of %d SafeEdit items from %s", len(chosen), len(items), name)
    return chosen


def save_safeedit(items: Iterable[SafeEditItem], path: str | Path) -> None:
    """Write items as a release-format JSON list, readable by ``load_safeedit`` and EasyEdit."""
    from detoxedit.files import atomic_write_text

    text = json.dumps([item.to_json() for item in items], indent=2, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def filter_items(
    items: Sequence[SafeEditItem],
    *,
    categories: Sequence[str] | None = None,
    attack_names: Sequence[str] | None = None,
) -> list[SafeEditItem]:
    """Keep items whose category and attack name are among those given (case-insensitive)."""
    wanted_categories = _casefolded(categories)
    wanted_attacks = _casefolded(attack_names)
    if wanted_categories is not None:
        _warn_unknown_filter(wanted_categories)
    kept = [
        item for item in items
        if (wanted_categories is None or item.unsafety_category.casefold() in wanted_categories)
        and (wanted_attacks is None or item.attack_name.casefold() in wanted_attacks)
    ]
    if items and not kept:
        logger.warning("No item matches categories=%s attack_names=%s", categories, attack_names)
    return kept


def warn_unknown_categories(items: Sequence[SafeEditItem], source: str) -> None:
    """Log categories outside the nine of the release; a warning, since new data may add some."""
    known = {c.casefold() for c in UNSAFE_CATEGORIES}
    unknown = Counter(i.unsafety_category for i in items if i.unsafety_category.casefold() not in known)
    for category, count in unknown.items():
        logger.warning("%s: unknown unsafety category %r on %d item(s); known: %s",
                       source, category, count, ", ".join(UNSAFE_CATEGORIES))


def _warn_unknown_filter(wanted: set[str]) -> None:
    known = {c.casefold() for c in UNSAFE_CATEGORIES}
    for category in sorted(wanted - known):
        logger.warning("Filter category %r is not one of the release's: %s",
                       category, ", ".join(UNSAFE_CATEGORIES))


def _casefolded(names: Sequence[str] | None) -> set[str] | None:
    if names is None:
        return None
    if isinstance(names, str):  # a lone string would otherwise be split into letters
        names = [names]
    return {n.casefold() for n in names}


def _read_source(source: str | Path) -> tuple[list[RawRecord], str]:
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        return _read_hub(source), source
    return read_records(source), str(source)


def _read_hub(spec: str) -> list[RawRecord]:
    """Read ``hf:<dataset id>:<split>``; ``datasets`` is imported only here, as it is optional."""
    dataset_id, _, split = spec[len(HF_PREFIX):].rpartition(":")
    if not dataset_id or not split:
        raise DataError(f"{spec}: expected 'hf:<dataset id>:<split>', e.g. 'hf:zjunlp/SafeEdit:test'")
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise DataError(f"{spec}: loading from the Hugging Face Hub needs the 'datasets' package "
                        "(pip install 'detoxedit[hub]'); or download the file and pass its path") from err
    try:
        rows = load_dataset(dataset_id, split=split)
    except Exception as err:  # offline, gated, unknown split: all mean "use a local file"
        raise DataError(f"{spec}: could not load split {split!r} of {dataset_id!r} from the Hub "
                        f"({type(err).__name__}: {err}); if offline or the set is gated, log in "
                        "or pass a local copy of the file") from err
    return [RawRecord(index=i, obj=dict(row)) for i, row in enumerate(rows)]
