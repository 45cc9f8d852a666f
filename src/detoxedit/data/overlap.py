"""Test items that also occur in the training data (or among the edit instances) would inflate every score.

Overlap is judged by content, not by id: SafeEdit's files number their items each on their own
(`safeedit_ccks2024_dev.json` and `safeedit_test_subset_dev.json` share 30 ids, and none of those
pairs has the same prompt), so equal ids in two files say nothing. A test item overlaps when its
harmful question, or its whole adversarial input, occurs in the training data (compared after
case folding and whitespace normalisation). A run refuses overlapping data unless asked to drop
those test items (`--drop-overlap`), and then says how many it dropped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

from detoxedit.data.schema import SafeEditItem
from detoxedit.errors import DetoxeditError

logger = logging.getLogger(__name__)
_SHOWN = 5


def normalized(text: str) -> str:
    """Case-folded, whitespace-collapsed text without surrounding punctuation: the key text is compared by."""
    return re.sub(r"\s+", " ", text.casefold()).strip(" \t\n.?!\"'")


@dataclass(frozen=True)
class Overlap:
    """A test item found in the training data, and why."""

    item: SafeEditItem
    reason: str


def find_overlaps(test: Sequence[SafeEditItem], train: Sequence[SafeEditItem]) -> list[Overlap]:
    """Test items whose question or adversarial input occurs in `train` (in test order)."""
    questions = {normalized(t.question) for t in train if t.question.strip()}
    prompts = {normalized(t.adversarial_prompt) for t in train}
    found = []
    for item in test:
        if normalized(item.adversarial_prompt) in prompts:
            found.append(Overlap(item, "the same adversarial input"))
        elif item.question.strip() and normalized(item.question) in questions:
            found.append(Overlap(item, f"the same question ({item.question[:60]!r})"))
    return found


def without_overlap(test: list[SafeEditItem], train: Sequence[SafeEditItem], drop: bool,
                    train_name: str = "the training data") -> tuple[list[SafeEditItem], int]:
    """The test items that do not occur in `train`, and how many were dropped.

    Raises:
        DetoxeditError: some do and `drop` is False (naming the first few and the option that drops them),
            or none would be left.
    """
    overlaps = find_overlaps(test, train)
    if not overlaps:
        return test, 0
    if not drop:
        shown = "; ".join(f"item {o.item.id}: {o.reason}" for o in overlaps[:_SHOWN])
        more = f" and {len(overlaps) - _SHOWN} more" if len(overlaps) > _SHOWN else ""
        raise DetoxeditError(f"{len(overlaps)} of {len(test)} test items also occur in {train_name} ({shown}{more}); "
                             "scores on them would be inflated. Use separate data, or --drop-overlap to evaluate "
                             "only the others")
    dropped = {id(o.item) for o in overlaps}
    kept = [item for item in test if id(item) not in dropped]
    if not kept:
        raise DetoxeditError(f"every one of the {len(test)} test items occurs in {train_name}; nothing is left to evaluate")
    logger.warning("Dropped %d of %d test items that occur in %s (--drop-overlap); %d remain",
                   len(overlaps), len(test), train_name, len(kept))
    return kept, len(overlaps)
