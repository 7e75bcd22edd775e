"""The pipeline factory: `create_pipeline(config) -> tfx Pipeline`. Pure: no I/O, no env reads."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

from components.util.spans import span_number
from pipelines.config import PipelineConfig
from pipelines.taxi import features as F
from pipelines.taxi.model_options import SERVING_SIGNATURES, hyperparameters

PREPROCESSING_FN = "pipelines.taxi.preprocessing.preprocessing_fn"
RUN_FN = "pipelines.taxi.model.run_fn"
HEADLINE_METRIC = "auc"


def _eval_config(config: PipelineConfig):
    import tensorflow_model_analysis as tfma

    gates = config.gates
    overall_gate = tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()],
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": gates.auc_floor}),
            # Ignored by TFMA when no baseline model was resolved (the first run).
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                relative={"value": gates.min_relative_improvement},
            ),
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                label_key=F.TRANSFORMED_LABEL,
                preprocessing_function_names=["transform_features"],
                # Without a type TFMA loads each model with Keras just to find out it is one, then
                # loads it again per Beam stage and re-computes its compiled metrics (duplicates
                # of ours). We only call signatures: a plain SavedModel load is enough.
                model_type=tfma.TF_GENERIC,
            )
        ],
        options=tfma.Options(include_default_metrics={"value": False}),
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in F.SLICE_FEATURES],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(
                        class_name="AUC",
                        # Keep TFMA's 10000 evenly spaced thresholds: 1000 would save only ~1 s, and
                        # the Cash slice (predictions all < 0.001) would fall to AUC ~0.49 from ~0.85.
                        config='{"name": "%s"}' % HEADLINE_METRIC,
                        per_slice_thresholds=[overall_gate],
                    ),
                    tfma.MetricConfig(class_name="BinaryAccuracy"),
                    tfma.MetricConfig(class_name="BinaryCrossentropy", config='{"name": "loss"}'),
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # The share of positive labels: 0 or 1 on a slice means AUC is undefined there
                    # (TFMA reports 0), which the summary and the metrics then say.
                    tfma.MetricConfig(class_name="MeanLabel", config='{"name": "mean_label"}'),
                ]
            ),
        ],
    )


class Resolvers:
    """The pipeline's resolver nodes, one method each: pipelines/resolvers.py's strategies, which
    read ML Metadata the way this project needs (the served model, baselines that passed the gates,
    the rolling window). A method may return None where a target has no such node: TFX's Kubeflow
    V2 compiler takes stock strategies only (pipelines/kubeflow.py supplies those). `after_gate`
    says how the nodes after a data gate wait for its verdict."""

    def after_gate(self, verdict):
        """The context the nodes downstream of a data gate are built in; `verdict`: the gate's output
        channel (components/verdict.py). None here: the node runner stops the run when a gate blocks."""
        return contextlib.nullcontext()

    def previous_span_statistics(self, config: PipelineConfig):
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        from pipelines.resolvers import PreviousSpanStatisticsStrategy

        return Resolver(
            strategy_class=PreviousSpanStatisticsStrategy,
            config={"current_span": span_number(config.span_date)},
            statistics=Channel(type=standard_artifacts.ExampleStatistics),
            verdicts=Channel(type=standard_artifacts.ExampleAnomalies),
        ).with_id("previous_span_statistics")

    def served_training_statistics(self, config: PipelineConfig):
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        from pipelines.resolvers import ServedTrainingStatisticsStrategy

        return Resolver(
            strategy_class=ServedTrainingStatisticsStrategy,
            model=Channel(type=standard_artifacts.Model),
            pushed_model=Channel(type=standard_artifacts.PushedModel),
            statistics=Channel(type=standard_artifacts.ExampleStatistics),
        ).with_id("served_training_statistics")

    def training_window(self, config: PipelineConfig):
        """The raw Examples of the newest `window_days` days that passed the data gates (None:
        Transform and Trainer take this span's Examples from ExampleGen)."""
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        from pipelines.resolvers import WindowExamplesStrategy

        return Resolver(
            strategy_class=WindowExamplesStrategy,
            config={"current_span": span_number(config.span_date), "window_days": config.window_days},
            examples=Channel(type=standard_artifacts.Examples),
            verdicts=Channel(type=standard_artifacts.ExampleAnomalies),
        ).with_id("training_window")

    def analyzer_cache(self, config: PipelineConfig):
        """An earlier night's tf.Transform analyzer cache for the same schema and preprocessing."""
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        from pipelines.resolvers import AnalyzerCacheStrategy

        return Resolver(
            strategy_class=AnalyzerCacheStrategy,
            config={"current_span": span_number(config.span_date), "fingerprint": config.transform_fingerprint},
            cache=Channel(type=standard_artifacts.TransformCache),
        ).with_id("analyzer_cache")

    def tuned_hyperparameters(self, config: PipelineConfig):
        """The newest weekly tuning result (pipelines/tuning.py: TFX's Tuner writes a HyperParameters
        artifact in this pipeline's context); none yet: the Trainer keeps the defaults."""
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        from pipelines.resolvers import NewestTuningStrategy

        return Resolver(
            strategy_class=NewestTuningStrategy,
            hyperparameters=Channel(type=standard_artifacts.HyperParameters),
        ).with_id("tuned_hyperparameters")

    def served_model(self, config: PipelineConfig):
        """The Evaluator's baseline: the model behind the newest successful push."""
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        from pipelines.resolvers import ServedModelStrategy

        return Resolver(
            strategy_class=ServedModelStrategy,
            model=Channel(type=standard_artifacts.Model),
            pushed_model=Channel(type=standard_artifacts.PushedModel),
        ).with_id("served_model")


def _output(node, key: str):
    return node.outputs[key] if node is not None else None


def data_gate_components(config: PipelineConfig, resolvers: Optional[Resolvers] = None) -> list:
    """ImportSchemaGen ... DriftValidator: everything up to the gate before Transform, in order.

    Shared by the nightly pipeline and `mlops validate` (same pipeline name, so both read and
    write the same ML Metadata baselines)."""
    resolvers = resolvers or Resolvers()
    # Not `tfx.v1`: it also imports the Google Cloud extensions, ~4 s per process for nothing.
    from tfx.components import ExampleValidator, StatisticsGen
    from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
    from tfx.proto import example_gen_pb2, range_config_pb2

    from components.drift_validator.component import DriftValidator
    from components.example_gen.component import FastCsvExampleGen
    from components.span_check.component import SpanCheck
    from components.span_check.spec import REPORT_KEY

    span = span_number(config.span_date)
    schema_gen = ImportSchemaGen(schema_file=config.schema_path)
    span_check = SpanCheck(
        schema=schema_gen.outputs["schema"],
        input_base=config.data_root,
        span_date=config.span_date.isoformat(),
        max_duplicate_fraction=config.data_gates.max_duplicate_fraction,
        fingerprint=config.span_fingerprint,
    )
    # The nodes after a gate are built in resolvers.after_gate(its verdict): locally nothing (the node
    # runner stops the run when a gate blocks), on Kubeflow a condition on the verdict. Not the
    # resolvers: they only read ML Metadata, and KFP gives a resolver task no condition.
    previous_statistics = resolvers.previous_span_statistics(config)
    served_statistics = resolvers.served_training_statistics(config)
    with resolvers.after_gate(span_check.outputs[REPORT_KEY]):
        # CsvExampleGen's contract (driver, span/version properties, split layout, the same tf.Examples
        # in the same splits) at ~20x its speed: components/example_gen. Same node id as before.
        example_gen = FastCsvExampleGen(
            input_base=config.data_root,
            input_config=example_gen_pb2.Input(
                splits=[example_gen_pb2.Input.Split(name="single_split", pattern="{YYYY}-{MM}-{DD}/*.csv")]
            ),
            output_config=example_gen_pb2.Output(
                split_config=example_gen_pb2.SplitConfig(
                    splits=[
                        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
                        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
                    ]
                )
            ),
            range_config=range_config_pb2.RangeConfig(
                static_range=range_config_pb2.StaticRange(start_span_number=span, end_span_number=span)
            ),
        ).with_id("CsvExampleGen")
        # Files the span check blocked never reach ExampleGen (a malformed row would crash it).
        example_gen.add_upstream_node(span_check)
        import tensorflow_data_validation as tfdv  # StatisticsGen imports it anyway

        from components.drift_validator.executor import QUANTILE_BUCKETS

        statistics_gen = StatisticsGen(
            examples=example_gen.outputs["examples"],
            # Fine quantile histograms: the drift gate's JS divergence reads its deciles off them.
            stats_options=tfdv.StatsOptions(num_quantiles_histogram_buckets=QUANTILE_BUCKETS),
        )
        example_validator = ExampleValidator(
            statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
        )
        drift_validator = DriftValidator(
            statistics=statistics_gen.outputs["statistics"],
            schema=schema_gen.outputs["schema"],
            schema_anomalies=example_validator.outputs["anomalies"],
            previous_statistics=_output(previous_statistics, "statistics"),
            served_statistics=_output(served_statistics, "statistics"),
            span_label=config.span_date.isoformat(),
            warn_only_features=config.data_gates.warn_features,
        )
    nodes = [schema_gen, span_check, example_gen, statistics_gen, example_validator,
             previous_statistics, served_statistics, drift_validator]
    return [node for node in nodes if node is not None]


def create_validation_pipeline(config: PipelineConfig):
    """The data gates alone (`mlops validate`): no Transform, Trainer or Pusher."""
    from tfx.orchestration.pipeline import Pipeline

    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=data_gate_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=config.metadata.to_proto(),
        beam_pipeline_args=config.beam_pipeline_args,
    )


def create_pipeline(config: PipelineConfig, resolvers: Optional[Resolvers] = None):
    """Builds the nightly pipeline: ingest and gate `config.span_date`, then train on the window of
    good spans ending with it and evaluate on it. `resolvers`: another set of resolver nodes for an
    orchestrator that cannot run the project's own (pipelines/kubeflow.py); default: the project's."""
    from tfx.components import Trainer, Transform
    from tfx.dsl.components.base import executor_spec
    from tfx.orchestration.pipeline import Pipeline
    from tfx.proto import trainer_pb2
    from tfx.types.standard_component_specs import ANOMALIES_KEY

    from components.evaluator.component import GatedEvaluator
    from components.infra_validator.component import InfraValidator
    from components.pusher.component import AtomicPusher
    from components.span_check.spec import REPORT_KEY
    from components.window.executor import WindowTrainerExecutor, WindowTransformExecutor
    from components.window.properties import CUSTOM_CACHE_FINGERPRINT, CUSTOM_WINDOW_DAYS

    resolvers = resolvers or Resolvers()
    gate = data_gate_components(config, resolvers)
    schema_gen, span_check, example_gen, drift_validator = gate[0], gate[1], gate[2], gate[-1]
    window, analyzer_cache = resolvers.training_window(config), resolvers.analyzer_cache(config)
    if window is not None:
        # A resolver node resolves when it runs: after the gates recorded this span's verdict.
        window.add_upstream_node(drift_validator)
    served_model = resolvers.served_model(config)
    tuned = resolvers.tuned_hyperparameters(config)
    # Nothing after the gates runs on a span either gate blocked (resolvers.after_gate).
    with resolvers.after_gate(span_check.outputs[REPORT_KEY]), \
            resolvers.after_gate(drift_validator.outputs[ANOMALIES_KEY]):
        examples = window.outputs["examples"] if window is not None else example_gen.outputs["examples"]
        cached = config.window_days > 1  # one span a night: nothing would ever read the cache (~6 s saved)
        # --no-cache: Transform analyzes every span of the window again (and writes a fresh cache).
        read_cache = cached and config.enable_cache
        transform = Transform(
            examples=examples,
            schema=schema_gen.outputs["schema"],
            preprocessing_fn=PREPROCESSING_FN,
            analyzer_cache=_output(analyzer_cache, "cache") if read_cache else None,
            disable_analyzer_cache=not cached,
            disable_statistics=True,
            # Nothing reads a transformed copy of the window: run_fn transforms its batches itself.
            materialize=False,
            # Recorded on the analyzer cache it writes; tells the next night's cache resolver whether
            # that cache fits its schema and preprocessing. preprocessing_fn takes no custom_config.
            custom_config={CUSTOM_CACHE_FINGERPRINT: config.transform_fingerprint},
        )
        transform.executor_spec = executor_spec.BeamExecutorSpec(WindowTransformExecutor)
        # Data that failed validation never reaches Transform, Trainer or Pusher.
        transform.add_upstream_node(drift_validator)
        trainer = Trainer(
            run_fn=config.trainer_run_fn or RUN_FN,
            # The window's raw Examples: run_fn applies the transform graph per batch (no transformed copy).
            examples=examples,
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            # The newest weekly tuning result, if any: run_fn trains with it instead of the defaults below.
            hyperparameters=_output(tuned, "hyperparameters"),
            train_args=trainer_pb2.TrainArgs(num_steps=config.train_steps),
            eval_args=trainer_pb2.EvalArgs(num_steps=config.eval_steps),
            # Recorded by ML Metadata with the training: `mlops lineage` shows them as its hyperparameters.
            custom_config={"strategy": config.strategy, "batch_size": config.batch_size, **hyperparameters(),
                           CUSTOM_WINDOW_DAYS: config.window_days},
        )
        # Trains on the window's older spans and evaluates on the newest (components/window).
        trainer.executor_spec = executor_spec.ExecutorClassSpec(WindowTrainerExecutor)
        evaluator = GatedEvaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            baseline_model=_output(served_model, "model"),
            eval_config=_eval_config(config),
            slice_margin=config.gates.slice_margin,
            min_slice_examples=config.gates.min_slice_examples,
        )
        # Servable before pushed: the candidate in a throwaway model server, every signature called.
        infra_validator = InfraValidator(
            model=trainer.outputs["model"],
            examples=example_gen.outputs["examples"],
            model_blessing=evaluator.outputs["blessing"],
            model_name=Path(config.serving_model_dir).name,
            required_signatures=SERVING_SIGNATURES,
        )
        pusher = AtomicPusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            infra_blessing=infra_validator.outputs["blessing"],
            push_base_directory=config.serving_model_dir,
            keep_versions=config.keep_versions,
            project_home=config.project_home,
        )
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            node
            for node in (
                *gate,
                window,
                analyzer_cache,  # resolved even when unused: every window size has the same nodes (DAG tasks)
                transform,
                tuned,
                trainer,
                served_model,
                evaluator,
                infra_validator,
                pusher,
            )
            if node is not None
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=config.metadata.to_proto(),
        beam_pipeline_args=config.beam_pipeline_args,
    )
