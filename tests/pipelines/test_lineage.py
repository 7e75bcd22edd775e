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


def _put(store, type_ids, kind: str, uri: str, **props):
    from ml_metadata.proto import metadata_store_pb2 as pb

    if kind not in type_ids:
        type_ids[kind] = store.put_artifact_type(pb.ArtifactType(name=kind))
    artifact = pb.Artifact(type_id=type_ids[kind], uri=uri, state=pb.Artifact.LIVE)
    for key, value in props.items():
        field = {int: "int_value", float: "double_value", str: "string_value"}[type(value)]
        setattr(artifact.custom_properties[key], field, value)
    return artifact


def _execute(store, name: str, inputs: dict, outputs: dict) -> list:
    """One execution of node type `name` with its input and output artifacts ({key: artifact or id});
    returns the output artifacts' ids, in order."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    execution = pb.Execution(type_id=store.put_execution_type(pb.ExecutionType(name=name)),
                             last_known_state=pb.Execution.COMPLETE)
    pairs = []
    for kind, items in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
        for key, artifact in items.items():
            if isinstance(artifact, int):
                artifact = store.get_artifacts_by_id([artifact])[0]
            event = pb.Event(type=kind)
            event.path.steps.add().key = key
            event.path.steps.add().index = 0
            pairs.append((artifact, event))
    run = store.get_context_by_type_and_name("pipeline_run", "nightly_retrain__night-1")
    if run is None:  # every TFX execution belongs to its run's pipeline_run context
        run = pb.Context(type_id=store.put_context_type(pb.ContextType(name="pipeline_run")),
                         name="nightly_retrain__night-1")
        run.id = store.put_contexts([run])[0]
    _, ids, _ = store.put_execution(execution, pairs, [run])
    return ids[len(inputs):]


def test_the_chain_shows_the_infravalidators_infra_blessing_next_to_the_evaluation(tmp_path):
    """The nodes a nightly push goes through, as TFX records them in ML Metadata (the artifact and
    execution type names, the event keys and the InfraValidator's custom properties): model ->
    GatedEvaluator -> ModelBlessing, model -> InfraValidator -> InfraBlessing, both -> AtomicPusher."""
    import jsonschema

    from components.infra_validator import spec as S

    home = _home(tmp_path)
    _empty_store(home)
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(home / "var" / "metadata.sqlite")
    store = metadata_store.MetadataStore(config)
    types: dict = {}
    [model_id] = store.put_artifacts([_put(store, types, "Model", str(tmp_path / "model"))])
    [blessing_id] = _execute(store, lineage.EVALUATOR, {"model": model_id}, {
        "blessing": _put(store, types, "ModelBlessing", str(tmp_path / "blessing"), blessed=1, current_model_id=model_id,
                         reason="auc 0.81 >= floor 0.6")})
    [infra_id] = _execute(store, lineage.INFRA_VALIDATOR, {"model": model_id, "model_blessing": blessing_id}, {
        "blessing": _put(store, types, "InfraBlessing", str(tmp_path / "infra"), **{
            S.BLESSED: 1, S.REASON: "both signatures answered 4 requests", S.MODEL_ID: model_id,
            S.SERVER_START_SECONDS: 2.5, S.REQUESTS_SECONDS: 0.25, S.VALIDATION_SECONDS: 3.0, S.REQUESTS_ANSWERED: 4,
            S.SIGNATURES: "serving_default,serving_features"})})

    def push(version: int, kind: str, inputs: dict) -> None:
        _execute(store, lineage.PUSHER, inputs, {"pushed_model": _put(
            store, types, "PushedModel", str(tmp_path / f"pushed-{version}"), pushed=1, pushed_version=version,
            source_model_id=inputs.get("model", 0), push_kind=kind, reason="", requested_by="test",
            model_fingerprint=f"fp-{inputs.get('model', 0)}", pushed_at="2026-12-06T00:00:00")})

    push(1, "nightly", {"model": model_id, "model_blessing": blessing_id, "infra_blessing": infra_id})
    push(2, "rollback", {"model": model_id, "model_blessing": blessing_id})  # a rollback reads no InfraBlessing
    [old_model] = store.put_artifacts([_put(store, types, "Model", str(tmp_path / "old-model"))])
    push(3, "nightly", {"model": old_model})  # pushed before the InfraValidator existed

    validator = jsonschema.Draft202012Validator(json.loads(lineage.SCHEMA_FILE.read_text()))
    chains = {}
    for version in (1, 2, 3):
        doc = json.loads(mlops(home, "lineage", "--version", str(version), "--json").stdout)
        validator.validate(doc)
        chains[version] = doc["chain"]
    infra = chains[1]["infra_blessing"]
    assert (infra["artifact_id"], infra["blessed"], infra["model_id"], infra["read_by_push"]) == (infra_id, True, model_id, True)
    assert infra["reason"] == "both signatures answered 4 requests" and infra["requests_answered"] == 4
    assert infra["signatures"] == ["serving_default", "serving_features"]
    assert infra["timings"] == {"server_start_seconds": 2.5, "requests_seconds": 0.25, "validation_seconds": 3.0}
    assert infra["execution"]["node"] == "InfraValidator" and infra["execution"]["state"] == "complete"
    assert chains[2]["infra_blessing"] == {**infra, "read_by_push": False}  # the model's, found by its id
    assert chains[3]["infra_blessing"] is None

    text = mlops(home, "lineage", "--version", "1").stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  infra "))
    assert lines[at] == f"  infra       {infra_id}: blessed -- both signatures answered 4 requests", text
    assert lines[at + 1].strip().startswith("signatures serving_default, serving_features; 4 requests answered; "
                                            "server start 2.5s, requests 0.25s, total 3s; execution "), text
    assert lines[at - 1].startswith("  evaluation"), text  # next to the evaluation
    assert "this push read none" in mlops(home, "lineage", "--version", "2").stdout
    assert "infra       none recorded" in mlops(home, "lineage", "--version", "3").stdout
    mermaid = mlops(home, "lineage", "--version", "1", "--mermaid").stdout
    assert f"InfraBlessing {infra_id}<br/>blessed" in mermaid and "InfraValidator" in mermaid
