"""Weekly tuning: TFX's Tuner (KerasTuner) over the last window of good spans; the nightly Trainer
takes the newest result.

`mlops tune [--date D] [--trials N]` (and the `weekly_tuning` DAG, which runs it) runs a small
pipeline under the nightly pipeline's name, so its output lands in the same ML Metadata context and
the nightly `tuned_hyperparameters` resolver (pipelines/pipeline.py) finds it:

    tuning_window  (the raw Examples of the newest `window_days` days up to D that passed every data
                    gate: the nightly training window's resolver strategy)
    tuning_schema  (the newest Schema), tuning_transform_graph (the newest transform graph)
      -> Tuner     (pipelines.taxi.tuning.tuner_fn: random search over model_options.SEARCH_SPACE,
                    `train_steps` steps a trial, scored by AUC on the eval split)
      -> HyperParameters (best_hyperparameters.txt: the best trial's KerasTuner config)

The transform graph is the newest night's: it was built over the same window ending one night
earlier at most, and a trial only compares settings, so its vocabulary being a night old does not
bias the choice. The search writes nothing the nightly run reads until it finishes: a failed or
interrupted tuning leaves the nightly Trainer on the previous result (or the defaults).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Callable, Optional

from components.util.spans import span_number
from pipelines.config import PipelineConfig
from pipelines.errors import ConfigError, DataError

TUNER_FN = "pipelines.taxi.tuning.tuner_fn"
TUNER = "Tuner"
WINDOW = "tuning_window"
DEFAULT_TRIALS = 6  # = pipelines.taxi.tuning.DEFAULT_TRIALS (that module imports TensorFlow)


@dataclasses.dataclass
class TuningResult:
    run_id: str
    status: str  # the Tuner node's: "complete" or "cached" (same window, settings and code as before)
    artifact_id: Optional[int]  # the HyperParameters artifact
    values: dict  # the best trial's values, as run_fn uses them
    spans: list  # the window's span dates
    seconds: float


def create_tuning_pipeline(config: PipelineConfig, trials: int):
    from tfx.components import Tuner
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
    from tfx.orchestration.pipeline import Pipeline
    from tfx.proto import trainer_pb2
    from tfx.types import standard_artifacts
    from tfx.types.channel import Channel

    from pipelines.resolvers import WindowExamplesStrategy

    window = Resolver(
        strategy_class=WindowExamplesStrategy,
        config={"current_span": span_number(config.span_date), "window_days": config.window_days},
        examples=Channel(type=standard_artifacts.Examples),
        verdicts=Channel(type=standard_artifacts.ExampleAnomalies),
    ).with_id(WINDOW)
    schema = Resolver(strategy_class=LatestArtifactStrategy,
                      schema=Channel(type=standard_artifacts.Schema)).with_id("tuning_schema")
    graph = Resolver(strategy_class=LatestArtifactStrategy,
                     transform_graph=Channel(type=standard_artifacts.TransformGraph)).with_id("tuning_transform_graph")
    tuner = Tuner(
        tuner_fn=TUNER_FN,
        examples=window.outputs["examples"],
        schema=schema.outputs["schema"],
        transform_graph=graph.outputs["transform_graph"],
        train_args=trainer_pb2.TrainArgs(num_steps=config.train_steps),
        eval_args=trainer_pb2.EvalArgs(num_steps=config.eval_steps),
        custom_config={"max_trials": trials, "batch_size": config.batch_size},
    )
    return Pipeline(
        pipeline_name=config.pipeline_name,  # same pipeline: the nightly resolver sees the result
        pipeline_root=config.pipeline_root,
        components=[window, schema, graph, tuner],
        enable_cache=config.enable_cache,
        metadata_connection_config=config.metadata.to_proto(),
        beam_pipeline_args=config.beam_pipeline_args,
    )


def _tfx_artifacts(store, type_name: str) -> list:
    from tfx.types import artifact_utils

    found = store.get_artifacts_by_type(type_name)
    if not found:
        return []
    artifact_type = store.get_artifact_type(type_name)
    return [artifact_utils.deserialize_artifact(artifact_type, a) for a in found]


def good_spans(config: PipelineConfig, day: Optional[dt.date] = None) -> list:
    """The span dates (ISO, oldest first) of the window of `config.window_days` days ending `day`
    (default: the newest span that passed every data gate) that passed them; refuses, with the fix,
    when there is nothing to tune on yet."""
    from ml_metadata import metadata_store

    from components.util.spans import span_date, span_of
    from pipelines.resolvers import passed_examples, window_examples

    store = metadata_store.MetadataStore(config.metadata.to_proto())
    if not store.get_artifacts_by_type("TransformGraph"):
        raise ConfigError("nothing to tune on: no nightly run has transformed a span yet",
                          "run a night first (`mlops run --date D` or the nightly_retrain DAG), then tune")
    examples, verdicts = _tfx_artifacts(store, "Examples"), _tfx_artifacts(store, "ExampleAnomalies")
    if day is None:
        passed = passed_examples(examples, verdicts)
        if not passed:
            raise DataError("no span has passed the data gates yet",
                            "run a night on good data first (`mlops run --date D`), then tune")
        day = dt.date.fromisoformat(span_date(span_of(passed[-1])))
    window = window_examples(examples, verdicts, span_number(day), config.window_days)
    if not window or span_of(window[-1]) != span_number(day):
        raise DataError(f"span {day} has not passed the data gates, so no window ends with it",
                        "tune on a date whose span passed (`mlops summary --date D`), or leave out --date "
                        "to tune on the newest good span")
    return [span_date(span_of(a)) for a in window]


def run_tuning(config: PipelineConfig, day: Optional[dt.date] = None, trials: int = DEFAULT_TRIALS,
               progress: Callable[[str], None] = print) -> TuningResult:
    """Runs the tuning pipeline on the window of good spans ending `day` (default: the newest good
    span); returns the best values. `config.span_date` is replaced by that span's date."""
    from pipelines.node_runner import compile_pipeline, ensure_state_dirs, node_ids, prepare_process_env, run_node
    from pipelines.run_context import record_run
    from pipelines.runner import default_run_id

    if trials < 1:
        raise ConfigError(f"--trials {trials}: a search needs at least one trial", "pass --trials 1 or more")
    prepare_process_env()
    config.check()
    ensure_state_dirs(config)
    spans = good_spans(config, day)
    config = dataclasses.replace(config, span_date=dt.date.fromisoformat(spans[-1]))
    run_id = default_run_id(config.span_date, kind="tuning")
    progress(f"tuning {run_id}: {trials} trial(s) of {config.train_steps} steps on {len(spans)} span(s) "
             f"({spans[0]} .. {spans[-1]})")
    ir = compile_pipeline(create_tuning_pipeline(config, trials), run_id)
    started = dt.datetime.now()
    status, execution_id = "", None
    for node_id in node_ids(ir):
        if node_id == TUNER:
            progress(f"  {TUNER}: training and comparing up to {trials} model(s) ...")
        result = run_node(ir, node_id)
        progress(f"  {node_id}: {result.status} in {result.seconds:.1f}s")
        if node_id == TUNER:
            status, execution_id = result.status, result.execution_id
    record_run(config.metadata.to_proto(), run_id, config)
    artifact_id, values = _best(config, execution_id)
    return TuningResult(run_id, status, artifact_id, values, spans, (dt.datetime.now() - started).total_seconds())


def _best(config: PipelineConfig, execution_id: Optional[int]):
    """(artifact id, values) of the HyperParameters the Tuner execution wrote (or its cached original)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.taxi.model_options import tuned_hyperparameters

    if execution_id is None:
        return None, {}
    store = metadata_store.MetadataStore(config.metadata.to_proto())
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id])
               if e.type == metadata_store_pb2.Event.OUTPUT]
    for artifact in store.get_artifacts_by_id(outputs):
        path = Path(artifact.uri) / "best_hyperparameters.txt"
        if path.exists():
            return artifact.id, tuned_hyperparameters(json.loads(path.read_text()))
    return None, {}
