"""The shared sequence of real pipeline runs (see test_pipeline_e2e.py for what each one is)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving import versions
from tests import prepared
from tests.conftest import DAY1, DAY2, FAST_RUN_ARGS, make_home, mlops
from pipelines.http import free_port as closed_port  # a free port: nothing listens there
from tests.e2e import webdriver

USER_MODULES = Path(__file__).parent / "modules"


def _run(home: Path, day, *extra: str, env=None) -> dict:
    result = mlops(home, "run", "--date", day.isoformat(), *FAST_RUN_ARGS, "--json", *extra, timeout=1200, env=env)
    progress = result.stdout[: result.stdout.index("{")]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    summary["progress"] = progress
    summary["stderr"] = result.stderr
    return summary


@prepared.setup("runs", lane="pipelines")
def _runs(tmp_path_factory) -> dict:
    home = make_home(tmp_path_factory.mktemp("e2e"))
    models = home / "serving" / "models" / "taxi"
    # The warm worker the first run starts, and every node it forks, get this as their TMPDIR, and
    # the user's model module of the 6th run on their PYTHONPATH.
    tmp = tmp_path_factory.mktemp("tmpdir")
    env = {"TMPDIR": str(tmp), "PYTHONPATH": str(USER_MODULES)}
    # The first run pushes its metrics to a Pushgateway that is down: it must not notice beyond one warning.
    first = _run(home, DAY1, "--auc-floor", "0.5", env={**env, "MLOPS_PUSHGATEWAY_URL": f"http://127.0.0.1:{closed_port()}"})
    after_first = versions.list_versions(models)
    first_saved_model = (models / "1" / "saved_model.pb").is_file()  # the 5th run's retention deletes it
    rerun = _run(home, DAY1, "--auc-floor", "0.5", env=env)
    after_rerun = versions.list_versions(models)
    strict = _run(home, DAY2, "--auc-floor", "0.999", env=env)
    after_strict = versions.list_versions(models)
    lenient = _run(home, DAY2, "--auc-floor", "0.0", "--min-improvement", "-1.0", "--slice-margin", "1.0", env=env)
    after_lenient = versions.list_versions(models)
    lenient_fingerprints = versions.fingerprints(models)
    # More training steps: another model, pushed as version 3, then retention keeps 1 version
    # (3) plus the one served until 3 loads (2).
    retained = _run(home, DAY2, "--auc-floor", "0.0", "--min-improvement", "-1.0", "--slice-margin", "1.0",
                    "--train-steps", "40", "--keep-versions", "1", env=env)
    out = dict(
        home=home, models=models, tmp=tmp, first=first, rerun=rerun, strict=strict, lenient=lenient,
        after_first=after_first, first_saved_model=first_saved_model, after_rerun=after_rerun,
        after_strict=after_strict, after_lenient=after_lenient, lenient_fingerprints=lenient_fingerprints,
        retained=retained, after_retained=versions.list_versions(models),
        listed=json.loads(mlops(home, "models", "list", "--json").stdout),
    )
    # A user's module file whose export lost `serving_features`: blessed by the Evaluator, refused by
    # the InfraValidator, not pushed (tests/e2e/test_infra_validation.py).
    out["unservable"] = _run(home, DAY2, "--auc-floor", "0.0", "--min-improvement", "-1.0", "--slice-margin", "1.0",
                             "--train-steps", "20", "--run-fn", "unservable_model.run_fn", env=env)
    out["after_unservable"] = versions.list_versions(models)
    mlops(home, "worker", "stop", check=False)  # no more runs in this home: free its memory now
    return out


@pytest.fixture(scope="session")
def runs(request) -> dict:
    """The 6 runs below, in one home (tests/prepared.py runs them beside the other shared setups)."""
    return prepared.result(request, "runs")


@pytest.fixture
def chromium():
    """Headless Chromium through chromedriver: `with chromium(log_path=...) as browser:`."""
    if not webdriver.available():
        pytest.fail("headless Chromium is not installed: run `make browser` (Debian chromium + chromium-driver)")
    return webdriver.Browser
