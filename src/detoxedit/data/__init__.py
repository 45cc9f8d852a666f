"""SafeEdit and general-ability data: item types, validated loading, sampling and prompts."""

from __future__ import annotations

from detoxedit.data.general import (
    TriviaQAItem,
    XSumItem,
    load_triviaqa,
    load_xsum,
    triviaqa_prompt,
    truncate_to_tokens,
    xsum_prompt,
)
from detoxedit.data.safeedit import filter_items, load_safeedit, save_safeedit
from detoxedit.data.schema import (
    INPUT_KINDS,
    METRIC_TO_KIND,
    UNSAFE_CATEGORIES,
    DataError,
    GeneralizationTest,
    KnowledgeConstraint,
    SafeEditItem,
    sample_in_order,
)

__all__ = [
    "INPUT_KINDS",
    "METRIC_TO_KIND",
    "UNSAFE_CATEGORIES",
    "DataError",
    "GeneralizationTest",
    "KnowledgeConstraint",
    "SafeEditItem",
    "TriviaQAItem",
    "XSumItem",
    "filter_items",
    "load_safeedit",
    "load_triviaqa",
    "load_xsum",
    "sample_in_order",
    "save_safeedit",
    "triviaqa_prompt",
    "truncate_to_tokens",
    "xsum_prompt",
]
