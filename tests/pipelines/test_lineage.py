"""`mlops lineage` without a pipeline run: its JSON schema, and the clear errors for a store it cannot
use (the queries themselves run on real nightly runs: tests/e2e/test_airflow_nightly.py)."""

from __future__ import annotations

import json

import jsonschema
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipelines import lineage
from tests.conftest import mlops


def _home(tmp_path):
    home = tmp_path / "home"
    (home / "var").mkdir(parents=True)
    return home


def _empty_store(home):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(home / "var" / "metadata.sqlite")
    metadata_store.MetadataStore(config)  # creates ML Metadata's tables, records nothing


def test_the_json_schema_is_valid_and_versioned_like_the_code():
    schema = json.loads(lineage.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": lineage.SCHEMA_VERSION}
    assert set(schema["properties"]["kind"]["enum"]) == {"chain", "span", "run", "diff"}
    # A document missing what its kind promises is refused.
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid({"schema_version": 1, "kind": "chain", "query": {"served": True}})
    assert not validator.is_valid({"schema_version": 2, "kind": "span", "query": {"span": "2026-11-20"}, "span": {}})


def test_a_missing_empty_or_foreign_store_is_a_clear_error_with_exit_2(tmp_path):
    home = _home(tmp_path)
    store = home / "var" / "metadata.sqlite"
    cases = [(None, f"no ML Metadata store at {store}"), (b"", "is empty (0 bytes)"),
             (b"this is not a database" * 100, "cannot be read as an ML Metadata store")]
    for content, words in cases:
        if content is not None:
            store.write_bytes(content)
        result = mlops(home, "lineage", check=False)
        assert result.returncode == 2 and words in result.stderr, (content, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert store.read_bytes() == cases[-1][0]  # read-only: the command never rewrote it


def test_a_served_version_no_push_explains_and_nothing_served_are_refused(tmp_path):
    home = _home(tmp_path)
    _empty_store(home)
    result = mlops(home, "lineage", check=False)
    assert result.returncode == 2 and "no model is served" in result.stderr, result.stderr
    (home / "serving" / "models" / "taxi" / "4").mkdir(parents=True)
    (home / "serving" / "models" / "taxi" / "4" / "saved_model.pb").write_bytes(b"copied in by hand")
    result = mlops(home, "lineage", "--served", check=False)
    assert result.returncode == 2, result.stderr
    assert "version 4 is in" in result.stderr and "no push in ML Metadata explains it" in result.stderr
    result = mlops(home, "lineage", "--span", "2026-11-20", check=False)
    assert result.returncode == 2 and "records nothing for span 2026-11-20" in result.stderr
    # A store no pipeline ran against has no run types yet: still a clear answer, not a traceback.
    result = mlops(home, "lineage", "--run", "manual__2026-11-20", check=False)
    assert result.returncode == 2 and "no pipeline run 'manual__2026-11-20'" in result.stderr, result.stderr
