"""`mlops compile --target kubeflow-v2`: the KFP variant of the pipeline (pipelines/kubeflow.py).

Compiles only: no pipeline run, no network, no ML Metadata. The golden file
tests/pipelines/golden/kubeflow_v2_pipeline.json is the compiled PipelineJob for GOLDEN_OPTIONS;
after an intended change to the pipeline, regenerate it (and local_ir_digest.json, the local
pipeline's shape) and review the diff:

    MLOPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/test_kubeflow.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

from pipelines import cli, kubeflow
from pipelines.config import PipelineConfig, ProjectPaths
from pipelines.errors import EXIT_CONFIG

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_JOB = GOLDEN / "kubeflow_v2_pipeline.json"
GOLDEN_LOCAL_DIGEST = GOLDEN / "local_ir_digest.json"
UPDATE = os.environ.get("MLOPS_UPDATE_GOLDEN") == "1"
SPAN = dt.date(2026, 11, 22)
GOLDEN_OPTIONS = kubeflow.KubeflowOptions(span_date=SPAN)  # every place a placeholder
REPO = Path(__file__).resolve().parents[2]
# Stock TFX splits a LatestBlessedModelStrategy resolver into these two KFP tasks.
BLESSING_TASK, MODEL_TASK = "served_model-model-blessing-resolver", "served_model-model-resolver"
# Each data gate and the output that carries its verdict (components/verdict.py).
GATE_VERDICTS = {"SpanCheck": "report", "DriftValidator": "anomalies"}
# The CEL TFX compiles `Cond(<gate output>.future()[0].custom_property("blocked") == 0)` to.
NOT_BLOCKED = re.compile(r"\(inputs\.artifacts\['(?P<input>[^']+)'\]\.artifacts\[0\]\.metadata\['blocked'\] == 0\.0\)")


@pytest.fixture(scope="module")
def job() -> dict:
    return kubeflow.compile_kubeflow_v2(GOLDEN_OPTIONS)


def tasks(job: dict) -> dict:
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def task_upstream(task: dict) -> set:
    """What a KFP task waits for: its dependent tasks and the producers of its input artifacts."""
    producers = {spec["taskOutputArtifact"]["producerTask"]
                 for spec in task.get("inputs", {}).get("artifacts", {}).values() if "taskOutputArtifact" in spec}
    return set(task.get("dependentTasks", [])) | producers


def compile_ir(pipeline):
    from pipelines.node_runner import compile_pipeline

    return compile_pipeline(pipeline, "test-run")


def local_config() -> PipelineConfig:
    return PipelineConfig.for_project(ProjectPaths(REPO), SPAN, transform_fingerprint="0" * 16)


def ir_digest(ir) -> dict:
    """The shape of a compiled TFX IR: per node its upstream nodes, input channels and resolver
    steps (not the values of its execution properties, which hold this machine's paths)."""
    from google.protobuf import json_format

    def channel(spec) -> str:
        producer = spec.producer_node_query.id or "*"  # a resolver's input: every artifact of the type
        return f"{producer}.{spec.output_key or spec.artifact_query.type.name}"

    digest = {}
    for node in ir.nodes:
        pipeline_node = node.pipeline_node
        inputs = {key: sorted(channel(c) for c in spec.channels) or [spec.input_graph_ref.key]
                  for key, spec in pipeline_node.inputs.inputs.items()}
        steps = [[graph_node.op_node.op_type, json_format.MessageToDict(graph_node.op_node)]
                 for graph in pipeline_node.inputs.input_graphs.values()
                 for _, graph_node in sorted(graph.nodes.items()) if graph_node.HasField("op_node")]
        digest[pipeline_node.node_info.id] = {
            "type": pipeline_node.node_info.type.name,
            "upstream": sorted(pipeline_node.upstream_nodes),
            "inputs": dict(sorted(inputs.items())),
            "resolver_steps": steps,
        }
    return digest


def check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: MLOPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest {__file__}"
    assert path.read_text() == text, (
        f"{path.name} differs from what the pipeline compiles to now; if the change is intended, regenerate "
        f"it with MLOPS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipelines/test_kubeflow.py and review the diff")


def test_every_node_of_the_kubeflow_variant_compiles_with_its_dependencies(job):
    ir = compile_ir(kubeflow.create_kubeflow_pipeline(GOLDEN_OPTIONS))
    ir_upstream = {node.pipeline_node.node_info.id: set(node.pipeline_node.upstream_nodes) for node in ir.nodes}
    # The IR's served_model resolver is two tasks in KFP; its consumers read the second one.
    rename = {"served_model": MODEL_TASK}
    expected = {rename.get(node, node): {rename.get(up, up) for up in upstream} for node, upstream in ir_upstream.items()}
    expected[BLESSING_TASK] = set()
    expected[MODEL_TASK] = {BLESSING_TASK}
    compiled = {name: task_upstream(task) for name, task in tasks(job).items()}
    assert compiled == expected
    # The custom-strategy resolvers are gone (the compiler would refuse them); the gates still are there.
    assert not {"training_window", "analyzer_cache", "served_training_statistics"} & set(ir_upstream)
    assert {"SpanCheck", "DriftValidator", "GatedEvaluator", "AtomicPusher"} <= set(compiled)
    assert "previous_span_statistics" in compiled["DriftValidator"] and MODEL_TASK in compiled["GatedEvaluator"]


def test_the_resolvers_are_the_stock_queries_and_every_step_runs_in_the_image():
    job = kubeflow.compile_kubeflow_v2(kubeflow.KubeflowOptions(span_date=SPAN, image="registry.example/nightly:7"))
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    queries = {name: executor["resolver"]["outputArtifactQueries"]
               for name, executor in executors.items() if "resolver" in executor}
    assert queries["previous_span_statistics_executor"]["statistics"]["filter"] == (
        'schema_title="tfx.ExampleStatistics" AND state=LIVE')
    assert "metadata.blessed.number_value=1" in queries[f"{BLESSING_TASK}_executor"]["model_blessing"]["filter"]
    containers = {name: executor["container"] for name, executor in executors.items() if "container" in executor}
    assert len(containers) + len(queries) == len(executors) == len(tasks(job))
    assert {c["image"] for c in containers.values()} == {"registry.example/nightly:7"}
    assert "components.drift_validator.executor.Executor" in containers["DriftValidator_executor"]["args"]


def test_the_compiled_pipeline_matches_the_golden_file(job):
    text = kubeflow.render(job)
    for local_path in (str(REPO), "/tmp", os.path.expanduser("~")):
        assert local_path not in text, f"the compiled pipeline names this machine's {local_path}"
    assert kubeflow.render(kubeflow.compile_kubeflow_v2(GOLDEN_OPTIONS)) == text  # deterministic
    check_golden(GOLDEN_JOB, text)


def test_the_local_pipeline_is_unchanged_by_the_kubeflow_variant():
    """The hook (`create_pipeline(config, resolvers)`) leaves the local pipeline as it was: its IR has
    the committed shape, with the project's own resolver strategies, before and after a KFP compile
    in the same process."""
    before = compile_ir(kubeflow.create_pipeline(local_config()))
    kubeflow.compile_kubeflow_v2(GOLDEN_OPTIONS)
    after = compile_ir(kubeflow.create_pipeline(local_config()))
    assert ir_digest(before) == ir_digest(after)
    assert before == after
    digest = ir_digest(before)
    strategies = {node: [step[0] for step in shape["resolver_steps"]] for node, shape in digest.items()
                  if shape["resolver_steps"]}
    assert strategies == {
        "previous_span_statistics": ["pipelines.resolvers.PreviousSpanStatisticsStrategy"],
        "served_training_statistics": ["pipelines.resolvers.ServedTrainingStatisticsStrategy"],
        "training_window": ["pipelines.resolvers.WindowExamplesStrategy"],
        "analyzer_cache": ["pipelines.resolvers.AnalyzerCacheStrategy"],
        "served_model": ["pipelines.resolvers.ServedModelStrategy"],
        "tuned_hyperparameters": ["pipelines.resolvers.NewestTuningStrategy"],
    }
    check_golden(GOLDEN_LOCAL_DIGEST, json.dumps(digest, indent=2, sort_keys=True) + "\n")


def test_mlops_compile_writes_the_pipeline_json(capsys, tmp_path):
    out = tmp_path / "nested" / "pipeline.json"
    code = cli.main(["compile", "--target", "kubeflow-v2", "--out", str(out), "--date", SPAN.isoformat()])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert f"wrote {out} ({len(tasks(json.loads(out.read_text())))} tasks)" in stdout
    assert out.read_text() == GOLDEN_JOB.read_text()  # the CLI's defaults are the golden file's options
    assert "--image is the placeholder 'nightly-tfx:latest'" in stderr


def test_mlops_compile_refuses_an_unknown_target_or_a_directory(capsys, tmp_path):
    code = cli.main(["compile", "--target", "argo", "--out", str(tmp_path / "p.json")])
    _, stderr = capsys.readouterr()
    assert code == EXIT_CONFIG
    assert "unknown compile target 'argo'" in stderr and "--target kubeflow-v2" in stderr
    assert not (tmp_path / "p.json").exists()
    code = cli.main(["compile", "--target", "kubeflow-v2", "--out", str(tmp_path)])
    _, stderr = capsys.readouterr()
    assert code == EXIT_CONFIG and "is a directory" in stderr


def downstream(job: dict, gate: str) -> set:
    """The tasks that (transitively) wait for `gate` in the compiled job."""
    upstream = {name: task_upstream(task) for name, task in tasks(job).items()}
    found, frontier = set(), {gate}
    while frontier:
        frontier = {name for name, ups in upstream.items() if ups & frontier} - found
        found |= frontier
    return found


def verdicts_read(task: dict) -> set:
    """(gate task, output key) of each verdict the task's trigger condition requires to be "not blocked";
    fails on any other kind of condition."""
    condition = task.get("triggerPolicy", {}).get("condition")
    if condition is None:
        return set()
    read = set()
    for clause in condition.split(" && "):
        match = NOT_BLOCKED.fullmatch(clause)
        assert match, f"unexpected trigger condition clause {clause!r}"
        source = task["inputs"]["artifacts"][match["input"]]["taskOutputArtifact"]
        read.add((source["producerTask"], source["outputArtifactKey"]))
    return read


def test_every_task_after_a_data_gate_runs_only_when_the_gate_did_not_block(job):
    after_drift = {"Transform", "Trainer", "GatedEvaluator", "InfraValidator", "AtomicPusher"}
    assert downstream(job, "DriftValidator") == after_drift
    assert downstream(job, "SpanCheck") == {"CsvExampleGen", "StatisticsGen", "ExampleValidator", "DriftValidator",
                                            *after_drift}
    for name, task in tasks(job).items():
        expected = {(gate, key) for gate, key in GATE_VERDICTS.items() if name in downstream(job, gate)}
        assert verdicts_read(task) == expected, name


def test_no_task_before_a_gate_nor_the_gate_itself_waits_for_its_verdict(job):
    compiled = tasks(job)
    # Before both gates, and the resolvers (metadata queries; KFP gives a resolver task no condition).
    before_both = set(compiled) - downstream(job, "SpanCheck") - downstream(job, "DriftValidator")
    assert before_both == {"ImportSchemaGen", "SpanCheck", "previous_span_statistics", "tuned_hyperparameters",
                           BLESSING_TASK, MODEL_TASK}
    for name in before_both:
        assert "triggerPolicy" not in compiled[name], name
    # TFX's KFP compiler drops a resolver's condition without a word: none is built in a gate's context.
    ir = compile_ir(kubeflow.create_kubeflow_pipeline(GOLDEN_OPTIONS))
    nodes = [node.pipeline_node for node in ir.nodes]
    resolvers = [node for node in nodes if node.node_info.type.name.endswith(".Resolver")]
    assert {node.node_info.id for node in resolvers} == {"previous_span_statistics", "served_model",
                                                         "tuned_hyperparameters"}
    assert not [node.node_info.id for node in resolvers if node.inputs.conditionals]
    # Between the gates (the DriftValidator included): the span check's verdict only.
    for name in ("CsvExampleGen", "StatisticsGen", "ExampleValidator", "DriftValidator"):
        assert verdicts_read(compiled[name]) == {("SpanCheck", "report")}, name


@pytest.mark.parametrize("blocking_gate", [None, "SpanCheck", "DriftValidator"])
def test_a_blocking_verdict_as_kfp_sees_it_skips_exactly_the_tasks_after_the_gate(job, blocking_gate):
    """The gates' executors write the verdict with components.verdict.record; TFX's KFP entrypoint hands
    it to KFP as the output artifact's metadata, which the trigger conditions read (evaluated here as
    KFP's CEL would: every clause `metadata['blocked'] == 0.0`)."""
    from google.protobuf import json_format
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint
    from tfx.types import standard_artifacts

    from components import verdict

    metadata = {}
    for gate, key in GATE_VERDICTS.items():
        report = standard_artifacts.ExampleAnomalies()
        report.uri = f"gs://bucket/{gate}/{key}"
        finding = {"feature": "fare", "kind": "drift", "message": "fare drifted", "blocking": gate == blocking_gate}
        verdict.record(report, gate, SPAN.isoformat(), [finding], problem="fare drifted", fix="fix it")
        kfp_artifact = entrypoint.translate_executor_output({key: [report]}, {})[key].artifacts[0]
        metadata[(gate, key)] = json_format.MessageToDict(kfp_artifact.metadata)
    runs = {name for name, task in tasks(job).items()
            if all(metadata[source][verdict.BLOCKED] == 0.0 for source in verdicts_read(task))}
    skipped = downstream(job, blocking_gate) if blocking_gate else set()
    assert runs == set(tasks(job)) - skipped
    assert "AtomicPusher" not in runs or blocking_gate is None


def test_the_local_pipelines_have_no_conditions():
    """Locally the node runner stops the run on a blocking verdict: no TFX conditional in the IR of the
    nightly pipeline or of `mlops validate`'s (whose shape no golden file holds)."""
    from pipelines.pipeline import create_validation_pipeline

    local, validation = (compile_ir(make(local_config())) for make in (kubeflow.create_pipeline,
                                                                        create_validation_pipeline))
    assert not [node.pipeline_node.node_info.id for node in (*local.nodes, *validation.nodes)
                if node.pipeline_node.inputs.conditionals]
    assert len(local.nodes) == 17 and len(validation.nodes) == 8
