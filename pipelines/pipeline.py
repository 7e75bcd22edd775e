"""The pipeline factory: `create_pipeline(config) -> tfx Pipeline`. Pure: no I/O, no env reads."""

from __future__ import annotations

from components.util.spans import span_number
from pipelines.config import PipelineConfig
from pipelines.taxi import features as F
from pipelines.taxi.model_options import hyperparameters

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


def data_gate_components(config: PipelineConfig) -> list:
    """ImportSchemaGen ... DriftValidator: everything up to the gate before Transform, in order.

    Shared by the nightly pipeline and `mlops validate` (same pipeline name, so both read and
    write the same ML Metadata baselines)."""
    # Not `tfx.v1`: it also imports the Google Cloud extensions, ~4 s per process for nothing.
    from tfx.components import ExampleValidator, StatisticsGen
    from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.proto import example_gen_pb2, range_config_pb2
    from tfx.types import standard_artifacts
    from tfx.types.channel import Channel

    from components.drift_validator.component import DriftValidator
    from components.example_gen.component import FastCsvExampleGen
    from components.span_check.component import SpanCheck
    from pipelines.resolvers import PreviousSpanStatisticsStrategy, ServedTrainingStatisticsStrategy

    span = span_number(config.span_date)
    schema_gen = ImportSchemaGen(schema_file=config.schema_path)
    span_check = SpanCheck(
        schema=schema_gen.outputs["schema"],
        input_base=config.data_root,
        span_date=config.span_date.isoformat(),
        max_duplicate_fraction=config.data_gates.max_duplicate_fraction,
        fingerprint=config.span_fingerprint,
    )
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
    previous_statistics = Resolver(
        strategy_class=PreviousSpanStatisticsStrategy,
        config={"current_span": span},
        statistics=Channel(type=standard_artifacts.ExampleStatistics),
        verdicts=Channel(type=standard_artifacts.ExampleAnomalies),
    ).with_id("previous_span_statistics")
    served_statistics = Resolver(
        strategy_class=ServedTrainingStatisticsStrategy,
        model=Channel(type=standard_artifacts.Model),
        pushed_model=Channel(type=standard_artifacts.PushedModel),
        statistics=Channel(type=standard_artifacts.ExampleStatistics),
    ).with_id("served_training_statistics")
    drift_validator = DriftValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        schema_anomalies=example_validator.outputs["anomalies"],
        previous_statistics=previous_statistics.outputs["statistics"],
        served_statistics=served_statistics.outputs["statistics"],
        span_label=config.span_date.isoformat(),
        warn_only_features=config.data_gates.warn_features,
    )
    return [schema_gen, span_check, example_gen, statistics_gen, example_validator,
            previous_statistics, served_statistics, drift_validator]


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


def window_resolvers(config: PipelineConfig):
    """(window, analyzer cache) resolvers: the raw Examples of the newest `window_days` days that
    passed the data gates, and an earlier night's tf.Transform analyzer cache for the same schema
    and preprocessing."""
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.types import standard_artifacts
    from tfx.types.channel import Channel

    from pipelines.resolvers import AnalyzerCacheStrategy, WindowExamplesStrategy

    span = span_number(config.span_date)
    window = Resolver(
        strategy_class=WindowExamplesStrategy,
        config={"current_span": span, "window_days": config.window_days},
        examples=Channel(type=standard_artifacts.Examples),
        verdicts=Channel(type=standard_artifacts.ExampleAnomalies),
    ).with_id("training_window")
    analyzer_cache = Resolver(
        strategy_class=AnalyzerCacheStrategy,
        config={"current_span": span, "fingerprint": config.transform_fingerprint},
        cache=Channel(type=standard_artifacts.TransformCache),
    ).with_id("analyzer_cache")
    return window, analyzer_cache


def create_pipeline(config: PipelineConfig):
    """Builds the nightly pipeline: ingest and gate `config.span_date`, then train on the window of
    good spans ending with it and evaluate on it."""
    from tfx.components import Trainer, Transform
    from tfx.dsl.components.base import executor_spec
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.orchestration.pipeline import Pipeline
    from tfx.proto import trainer_pb2
    from tfx.types import standard_artifacts
    from tfx.types.channel import Channel

    from components.evaluator.component import GatedEvaluator
    from components.pusher.component import AtomicPusher
    from components.window.executor import WindowTrainerExecutor, WindowTransformExecutor
    from components.window.properties import CUSTOM_CACHE_FINGERPRINT, CUSTOM_WINDOW_DAYS
    from pipelines.resolvers import ServedModelStrategy

    gate = data_gate_components(config)
    schema_gen, example_gen, drift_validator = gate[0], gate[2], gate[-1]
    window, analyzer_cache = window_resolvers(config)
    # A resolver node resolves when it runs: after the gates recorded this span's verdict.
    window.add_upstream_node(drift_validator)
    cached = config.window_days > 1  # one span a night: nothing would ever read the cache (~6 s saved)
    # --no-cache: Transform analyzes every span of the window again (and writes a fresh cache).
    read_cache = cached and config.enable_cache
    transform = Transform(
        examples=window.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        analyzer_cache=analyzer_cache.outputs["cache"] if read_cache else None,
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
        run_fn=RUN_FN,
        # The window's raw Examples: run_fn applies the transform graph per batch (no transformed copy).
        examples=window.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=trainer_pb2.TrainArgs(num_steps=config.train_steps),
        eval_args=trainer_pb2.EvalArgs(num_steps=config.eval_steps),
        # Recorded by ML Metadata with the training: `mlops lineage` shows them as its hyperparameters.
        custom_config={"strategy": config.strategy, "batch_size": config.batch_size, **hyperparameters(),
                       CUSTOM_WINDOW_DAYS: config.window_days},
    )
    # Trains on the window's older spans and evaluates on the newest (components/window).
    trainer.executor_spec = executor_spec.ExecutorClassSpec(WindowTrainerExecutor)
    served_model = Resolver(
        strategy_class=ServedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        pushed_model=Channel(type=standard_artifacts.PushedModel),
    ).with_id("served_model")
    evaluator = GatedEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=served_model.outputs["model"],
        eval_config=_eval_config(config),
        slice_margin=config.gates.slice_margin,
        min_slice_examples=config.gates.min_slice_examples,
    )
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_base_directory=config.serving_model_dir,
        keep_versions=config.keep_versions,
        project_home=config.project_home,
    )
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=[
            *gate,
            window,
            analyzer_cache,  # resolved even when unused: every window size has the same nodes (DAG tasks)
            transform,
            trainer,
            served_model,
            evaluator,
            pusher,
        ],
        enable_cache=config.enable_cache,
        metadata_connection_config=config.metadata.to_proto(),
        beam_pipeline_args=config.beam_pipeline_args,
    )
