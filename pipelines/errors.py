"""Errors that say what went wrong and what to do about it.

`MlopsError` and `ConfigError` live at the bottom layer (serving/errors.py), so that the model
server and retention raise the same errors as the pipeline; `DataError` is the pipeline's own.
"""

from serving.errors import ConfigError, MlopsError

__all__ = ["ConfigError", "DataError", "MlopsError"]


class DataError(MlopsError):
    """The input data cannot be used; nothing downstream was run."""
