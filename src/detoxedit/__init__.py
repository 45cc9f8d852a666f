"""detoxedit: detoxify chat LLMs by knowledge editing.

Importing the package does no work: models, judges and data load only when asked for.
"""

__version__ = "0.1.0"
