"""One real pipeline run per session gives the model every server test copies around.

Set MLOPS_SERVING_TEST_MODEL=<a pushed version directory> to reuse a model pushed earlier
(skips the 2-3 minute pipeline run while iterating on the server).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import prepared
from tests.conftest import DAY1, FAST_RUN_ARGS, KEEP_WORKER, make_home, mlops
from tests.serving.helpers import feature_rows


@prepared.setup("taxi_model", lane="pipelines")
def _taxi_model(tmp_path_factory) -> dict:
    home = make_home(tmp_path_factory.mktemp("serving"), days=1, end=DAY1)
    reuse = os.environ.get("MLOPS_SERVING_TEST_MODEL")
    if reuse:
        model = home / "serving" / "models" / "taxi" / "1"
        shutil.copytree(reuse, model)
    else:
        # test_rollback_serving runs and rolls back in this home later: its warm worker stays until then.
        mlops(home, "run", "--date", DAY1.isoformat(), *FAST_RUN_ARGS, "--auc-floor", "0.0", timeout=1200,
              env=KEEP_WORKER)
        model = home / "serving" / "models" / "taxi" / "1"
    assert (model / "saved_model.pb").is_file(), f"the pipeline pushed no model to {model.parent}"
    rows = feature_rows(home / "data" / "incoming" / DAY1.isoformat() / "data.csv")
    assert len(rows) >= 20
    return {"home": home, "model": model, "rows": rows}


@pytest.fixture(scope="session")
def taxi_model(request) -> dict:
    """{"home", "model" (a pushed SavedModel version dir), "rows" (typed feature dicts)}."""
    model = prepared.result(request, "taxi_model")
    yield model
    mlops(model["home"], "worker", "stop", check=False)


@pytest.fixture(scope="session")
def shifted(taxi_model, tmp_path_factory) -> Path:
    """The same model with a different output (a second 'training run' without training)."""
    from tests.serving.helpers import shifted_model

    return shifted_model(taxi_model["model"], tmp_path_factory.mktemp("shifted") / "model")
