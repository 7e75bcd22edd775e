"""Errors that say what went wrong and what to do about it.

`MlopsError` and `ConfigError` live at the bottom layer (serving/errors.py), so that the model
server and retention raise the same errors as the pipeline; `DataError` is the pipeline's own.
"""

from serving.errors import ConfigError, MlopsError

__all__ = ["ConfigError", "DataError", "MlopsError", "EXIT_FAILED", "EXIT_CONFIG", "EXIT_BLOCKED", "NO_RETRY_EXIT_CODES"]

# Exit codes of `mlops` commands (`mlops node run` above all: the nightly DAG retries only 1 and
# signals). The DAG files read NO_RETRY_EXIT_CODES from dags/taxi_manifest.json, which `mlops dags
# manifest` writes from here and a test keeps in step.
EXIT_FAILED = 1  # the node failed; a retry may succeed
EXIT_CONFIG = 2  # bad configuration or arguments (ConfigError): fix them first
EXIT_BLOCKED = 3  # the data failed validation (DataError): the run stops, retrying would block again
NO_RETRY_EXIT_CODES = {EXIT_CONFIG: "configuration error", EXIT_BLOCKED: "the span failed data validation"}


class DataError(MlopsError):
    """The input data cannot be used; nothing downstream was run."""
