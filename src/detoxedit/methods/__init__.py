"""Edit methods, one module each, registered by name in `METHODS`.

Importing this package registers the built-in methods. A new method is one new module that
subclasses `EditMethod` and registers itself, plus one import line here.
"""

from detoxedit.methods import none  # noqa: F401
from detoxedit.methods import dinm, ft_l  # noqa: F401
from detoxedit.methods import dinm_global  # noqa: F401
from detoxedit.methods import self_reminder  # noqa: F401
from detoxedit.methods import sft  # noqa: F401
from detoxedit.methods import dpo  # noqa: F401
from detoxedit.methods.base import (
    GLOBAL,
    METHODS,
    PER_ITEM,
    Edit,
    EditMethod,
    apply_deltas,
    applied,
    build_method,
    restore_weights,
)

__all__ = ["GLOBAL", "METHODS", "PER_ITEM", "Edit", "EditMethod", "apply_deltas", "applied", "build_method",
           "restore_weights"]
