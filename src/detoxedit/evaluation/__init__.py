"""Pieces of the evaluation runner: run config, resumable records, generation, metrics, general ability.

`detoxedit.runner` puts them together; this package holds the parts so each stays one screen long.
"""

from detoxedit.evaluation.config import RunConfig, config_differences
from detoxedit.evaluation.records import JsonlLog, read_jsonl

__all__ = ["JsonlLog", "RunConfig", "config_differences", "read_jsonl"]
