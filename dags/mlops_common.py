"""What the project's DAG files share: settings, the node operator, the exit codes not to retry.

Not a DAG file (dags/.airflowignore keeps Airflow's parser away from it); the DAG files import it
as `mlops_common` (Airflow puts the DAGs folder on sys.path). Like them it imports only Airflow
and the standard library: TFX lives in another Python environment (docs/architecture.md).

Settings are read from the environment when a DAG file is parsed (all optional):

- MLOPS_HOME                 project home holding data/, var/, schemas/ (default: the repository)
- MLOPS_BIN                  the `mlops` command of the TFX environment (default: <repo>/.venv/bin/mlops)
- MLOPS_DAG_TIMEZONE         time zone of the 02:00 schedule (default: UTC)
- MLOPS_MLMD_POOL            Airflow pool around ML Metadata writers (default: mlmd_writers, 1 slot)
- MLOPS_TASK_RETRIES         retries per node (default: 2)
- MLOPS_RETRY_DELAY_SECONDS  first retry delay; doubles each retry (default: 60)
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

DAGS_DIR = Path(__file__).resolve().parent
REPO = DAGS_DIR.parent
# The pipeline's shape and the CLI's exit codes, written by `mlops dags manifest` (a test keeps it current).
MANIFEST = json.loads((DAGS_DIR / "taxi_manifest.json").read_text())

HOME = os.environ.get("MLOPS_HOME") or str(REPO)
MLOPS = os.environ.get("MLOPS_BIN") or str(REPO / ".venv" / "bin" / "mlops")
TIMEZONE = os.environ.get("MLOPS_DAG_TIMEZONE") or "UTC"
POOL = os.environ.get("MLOPS_MLMD_POOL") or "mlmd_writers"
RETRIES = int(os.environ.get("MLOPS_TASK_RETRIES") or 2)
RETRY_DELAY = dt.timedelta(seconds=float(os.environ.get("MLOPS_RETRY_DELAY_SECONDS") or 60))

# `mlops node run` exit codes that retrying cannot fix (source: pipelines/errors.py, via the manifest).
NO_RETRY_EXIT_CODES = {int(code): why for code, why in MANIFEST["no_retry_exit_codes"].items()}


class TfxNodeOperator(BashOperator):
    """Runs one `mlops` command (one TFX node); fails without retries when retrying cannot help
    (bad data, bad configuration)."""

    ui_color = "#e8f0fe"

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as err:
            for code, why in NO_RETRY_EXIT_CODES.items():
                if str(err).rstrip(".").endswith(f"exit code {code}"):
                    raise AirflowFailException(
                        f"{self.task_id}: {why}; not retried (the reason is the last line of the log above)"
                    ) from err
            raise
