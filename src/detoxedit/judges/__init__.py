"""Safety judges behind one interface (`Judge.score(texts) -> list[float]`, probability unsafe).

Importing this package registers the built-in judges; none of them loads a model until it scores.
"""

from detoxedit.judges import embedded, hf, refusal  # noqa: F401  (register the built-in judges)
from detoxedit.judges.base import EMPTY_SCORE, JUDGES, Judge, is_empty, load_judge

__all__ = ["EMPTY_SCORE", "JUDGES", "Judge", "is_empty", "load_judge"]
