"""Exceptions that the CLI turns into a one-line message and a non-zero exit code.

Every error a user can cause (a bad file, a missing package, an unknown name) derives from
`DetoxeditError`, so the CLI can tell user mistakes from bugs, which keep their traceback.
"""

from __future__ import annotations


class DetoxeditError(Exception):
    """A problem the user can fix; the message says what to do."""


class ModelLoadError(DetoxeditError):
    """A model could not be loaded (missing package, missing file, corrupt cache)."""


class ArchitectureError(DetoxeditError):
    """The architecture adapter could not find a module it needs."""


class ConfigError(DetoxeditError):
    """A config or preset has an unknown key or a bad value."""
