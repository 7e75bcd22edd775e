"""FastCsvExampleGen is CsvExampleGen but for the executor: same parameters, same driver in the
compiled pipeline (so span, version, input_fingerprint and RangeConfig behave the same)."""

from __future__ import annotations

from tfx.components import CsvExampleGen
from tfx.dsl.compiler import compiler
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2

from components.example_gen import executor
from components.example_gen.component import FastCsvExampleGen


def _arguments() -> dict:
    """pipelines/pipeline.py's ExampleGen arguments."""
    return dict(
        input_base="/data/incoming",
        input_config=example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="single_split", pattern="{YYYY}-{MM}-{DD}/*.csv")]),
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
            example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)])),
        range_config=range_config_pb2.RangeConfig(
            static_range=range_config_pb2.StaticRange(start_span_number=20777, end_span_number=20777)),
    )


def test_parameters_outputs_and_driver_are_csv_example_gens():
    fast, stock = FastCsvExampleGen(**_arguments()), CsvExampleGen(**_arguments())
    assert isinstance(fast, CsvExampleGen)
    assert fast.exec_properties == stock.exec_properties
    assert fast.outputs["examples"].type is stock.outputs["examples"].type
    assert fast.driver_class is stock.driver_class
    assert fast.executor_spec.executor_class is executor.Executor


def test_the_compiled_node_runs_our_executor_after_csv_example_gens_driver(tmp_path):
    nodes = [CsvExampleGen(**_arguments()), FastCsvExampleGen(**_arguments()).with_id("FastCsvExampleGen")]
    ir = compiler.Compiler().compile(
        tfx_pipeline.Pipeline(pipeline_name="example_gen_test", pipeline_root=str(tmp_path), components=nodes))
    deployment = pipeline_pb2.IntermediateDeploymentConfig()
    ir.deployment_config.Unpack(deployment)

    def unpacked(specs, node_id, message):
        specs[node_id].Unpack(message)
        return message

    executors = {node: unpacked(deployment.executor_specs, node, executable_spec_pb2.BeamExecutableSpec())
                 for node in ("CsvExampleGen", "FastCsvExampleGen")}
    drivers = {node: unpacked(deployment.custom_driver_specs, node, executable_spec_pb2.PythonClassExecutableSpec())
               for node in ("CsvExampleGen", "FastCsvExampleGen")}
    assert executors["FastCsvExampleGen"].python_executor_spec.class_path == "components.example_gen.executor.Executor"
    assert drivers["FastCsvExampleGen"] == drivers["CsvExampleGen"]
    assert drivers["CsvExampleGen"].class_path == "tfx.components.example_gen.driver.FileBasedDriver"
    parameters = {node.pipeline_node.node_info.id: node.pipeline_node.parameters for node in ir.nodes}
    assert parameters["FastCsvExampleGen"] == parameters["CsvExampleGen"]
