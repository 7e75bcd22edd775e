"""The Beam arguments every TFX component gets keep the DirectRunner local and predictable."""

from __future__ import annotations

import datetime as dt
import logging

from pipelines.config import PipelineConfig, ProjectPaths


def config(tmp_path, **overrides) -> PipelineConfig:
    return PipelineConfig.for_project(ProjectPaths(tmp_path), dt.date(2026, 11, 20), **overrides)


def test_a_real_beam_pipeline_with_our_arguments_never_tries_the_prism_runner(tmp_path, caplog):
    # Left alone, Beam's DirectRunner first tries Prism, downloading a Go binary from GitHub at run
    # time (here: fails, leaves /tmp/beam-temp*; elsewhere: runs on an untested runner).
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")
    with beam.Pipeline(options=PipelineOptions(config(tmp_path).beam_pipeline_args)) as pipeline:
        assert_that(pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Prism" in m for m in messages), messages


def test_without_the_pin_beam_would_try_prism(tmp_path, caplog, monkeypatch):
    # The check above can fail: the same pipeline without our arguments goes to Prism first.
    import tempfile

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    # Prism's failed start leaves a beam-temp* directory behind: under tmp_path, not in /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as pipeline:
        pipeline | beam.Create([1]) | beam.Map(lambda x: x)
    assert any("PrismRunner" in r.getMessage() for r in caplog.records)


def test_a_runner_chosen_by_the_user_is_left_alone(tmp_path):
    args = config(tmp_path, extra_beam_args=("--runner=PrismRunner",)).beam_pipeline_args
    assert "--runner=PrismRunner" in args
    assert not any(a.startswith("--update_compatibility_version") for a in args)


# ------------------------------------------------------------------ Beam args in the compiled IR
# A cluster runner reaches TFX through PipelineConfig.extra_beam_args (docs/scale-out.md). These
# tests compile the nightly pipeline to IR, as every node task does (pipelines/node_runner.py), and
# read which nodes run a Beam executor from the IR itself.

import dataclasses  # noqa: E402

import pytest  # noqa: E402

CLUSTER_ARGS = ("--runner=FlinkRunner", "--flink_master=host:8081", "--environment_type=EXTERNAL")


def executor_specs(ir) -> dict:
    """node id -> the executor spec the IR holds for it (an Any: Beam or plain Python class)."""
    from tfx.proto.orchestration import pipeline_pb2

    deployment = pipeline_pb2.IntermediateDeploymentConfig()
    assert ir.deployment_config.Unpack(deployment)
    return dict(deployment.executor_specs)


def beam_args_by_node(ir) -> dict:
    """node id -> its beam_pipeline_args, for every node whose executor spec is a BeamExecutableSpec."""
    from tfx.proto.orchestration import executable_spec_pb2

    found = {}
    for node_id, spec in executor_specs(ir).items():
        if spec.Is(executable_spec_pb2.BeamExecutableSpec.DESCRIPTOR):
            beam = executable_spec_pb2.BeamExecutableSpec()
            spec.Unpack(beam)
            found[node_id] = list(beam.beam_pipeline_args)
    return found


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(IR with the cluster args, IR without them, the config with them): the same span and home."""
    from pipelines.node_runner import compile_for

    home = tmp_path_factory.mktemp("beam-ir")
    base = config(home)
    with_cluster = dataclasses.replace(base, extra_beam_args=CLUSTER_ARGS)
    return compile_for(with_cluster, "beam-args"), compile_for(base, "beam-args"), with_cluster


def test_every_beam_node_in_the_ir_carries_the_extra_beam_args(compiled):
    ir, _, cfg = compiled
    beam_nodes = beam_args_by_node(ir)
    node_ids = {n.pipeline_node.node_info.id for n in ir.nodes}
    assert beam_nodes and set(beam_nodes) <= node_ids, beam_nodes
    for node_id, args in beam_nodes.items():
        # All of them, in the order given, after the project's own defaults; the user's --runner
        # drops the DirectRunner's Prism pin.
        assert args[-len(CLUSTER_ARGS):] == list(CLUSTER_ARGS), (node_id, args)
        assert args == cfg.beam_pipeline_args, (node_id, args)
        assert not any(a.startswith("--update_compatibility_version") for a in args), (node_id, args)


def test_without_extra_args_no_beam_node_names_a_cluster_runner(compiled):
    # The check above can fail: the same pipeline compiled without the extra args has none of them.
    _, ir, _ = compiled
    beam_nodes = beam_args_by_node(ir)
    assert beam_nodes
    for node_id, args in beam_nodes.items():
        assert not set(CLUSTER_ARGS) & set(args), (node_id, args)
        assert any(a.startswith("--update_compatibility_version") for a in args), (node_id, args)


def test_the_trainer_runs_no_beam_and_the_extra_args_leave_it_unchanged(compiled):
    ir, baseline, _ = compiled
    specs, base_specs = executor_specs(ir), executor_specs(baseline)
    assert "Trainer" in specs
    assert "Trainer" not in beam_args_by_node(ir)  # a plain Python executor: TF trains, not Beam
    assert specs["Trainer"] == base_specs["Trainer"]
    assert not any(arg.encode() in specs["Trainer"].value for arg in CLUSTER_ARGS)
    # Every non-Beam node is the same with and without the cluster args.
    for node_id in set(specs) - set(beam_args_by_node(ir)):
        assert specs[node_id] == base_specs[node_id], node_id


def test_beam_args_reach_the_config_from_the_environment_and_the_command_line(tmp_path, monkeypatch):
    # What `mlops run|validate|node run` (and so every Airflow task, which inherits $MLOPS_BEAM_ARGS)
    # hand to PipelineConfig.extra_beam_args, in order: the environment's, then --beam-arg's.
    from pipelines.cli import build_parser
    from pipelines.cli.common import pipeline_config
    from pipelines.config import DIRECT_RUNNER_IMAGE
    from tests.conftest import DAY1, make_home

    home = make_home(tmp_path, days=1, rows=50, end=DAY1)
    monkeypatch.setenv("MLOPS_BEAM_ARGS", "--runner=FlinkRunner '--flink_master=host:8081'")
    args = build_parser().parse_args(["--home", str(home), "run", "--date", DAY1.isoformat(),
                                      "--beam-arg=--environment_type=EXTERNAL", "--beam-arg=--parallelism=4"])
    made = pipeline_config(args)
    assert made.extra_beam_args == ("--runner=FlinkRunner", "--flink_master=host:8081", "--environment_type=EXTERNAL",
                                    "--parallelism=4")
    # A cluster runner gets no DirectRunner placeholder image (its workers would try to pull it).
    assert not any(DIRECT_RUNNER_IMAGE in arg for arg in made.beam_pipeline_args)
    monkeypatch.delenv("MLOPS_BEAM_ARGS")
    plain = pipeline_config(build_parser().parse_args(["--home", str(home), "run", "--date", DAY1.isoformat()]))
    assert plain.extra_beam_args == () and f"--sdk_container_image={DIRECT_RUNNER_IMAGE}" in plain.beam_pipeline_args


def test_a_beam_arg_that_is_not_an_option_is_refused(tmp_path, monkeypatch):
    from pipelines.cli import build_parser
    from pipelines.cli.common import pipeline_config
    from pipelines.errors import ConfigError
    from tests.conftest import DAY1, make_home

    home = make_home(tmp_path, days=1, rows=50, end=DAY1)
    monkeypatch.setenv("MLOPS_BEAM_ARGS", "FlinkRunner")
    with pytest.raises(ConfigError, match="must look like --name=value, not 'FlinkRunner'"):
        pipeline_config(build_parser().parse_args(["--home", str(home), "run", "--date", DAY1.isoformat()]))
