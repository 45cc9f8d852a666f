"""Safety judges behind one interface (`Judge.score(texts) -> list[float]`, probability unsafe).

Importing this package registers the built-in judges; none of them loads a model until it scores.
The judge classes are exported too, for what `load_judge`'s specs cannot say (docs/judges.md builds
`HFJudge(path, unsafe_label=0)` for a classifier whose unsafe class is not 1).
"""

from detoxedit.judges.base import EMPTY_SCORE, JUDGES, Judge, is_empty, load_judge
from detoxedit.judges.embedded import EmbeddedJudge
from detoxedit.judges.hf import HFJudge
from detoxedit.judges.refusal import RefusalJudge

__all__ = ["EMPTY_SCORE", "JUDGES", "EmbeddedJudge", "HFJudge", "Judge", "RefusalJudge", "is_empty", "load_judge"]
