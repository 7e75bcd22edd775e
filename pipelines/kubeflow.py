"""The nightly pipeline compiled for Kubeflow Pipelines / Vertex AI Pipelines (`mlops compile`).

TFX's `KubeflowV2DagRunner` turns `create_pipeline` into a KFP PipelineJob (JSON). Its compiler
(TFX 1.16, `tfx/orchestration/kubeflow/v2/step_builder.py`) builds a Resolver node only for
`LatestArtifactStrategy` and `LatestBlessedModelStrategy`, and takes only plain `Channel` inputs
(not the `ResolvedChannel` of a resolver function built from `tfx/dsl/input_resolution/ops`). So
the KFP variant swaps the project's own resolvers (pipelines/resolvers.py) for what it takes:

| local resolver               | on Kubeflow V2                                                        |
|------------------------------|-----------------------------------------------------------------------|
| previous_span_statistics     | LatestArtifactStrategy: the newest ExampleStatistics, gate or no gate |
| served_training_statistics   | none: no drift check against the served model's training data        |
| training_window              | none: Transform and Trainer take this span alone (window_days=1)      |
| analyzer_cache               | none (one span: tf.Transform's cache is off, as with window_days=1)   |
| served_model                 | LatestBlessedModelStrategy: the newest blessed model, not the served |

A data gate that blocks stops the run locally in the node runner, which KFP does not use; here every
node after a gate is built in a TFX conditional on the gate's verdict (`KubeflowResolvers.after_gate`),
which the compiler makes the KFP trigger condition of its step.

Every other node compiles as it is; our Python components (SpanCheck, FastCsvExampleGen,
DriftValidator, the window executors, GatedEvaluator, AtomicPusher) run as container steps of
`image`, which must hold TFX 1.16 and this project. The output is deterministic: placeholders for
every place, no timestamps, no paths of the machine that compiled it. Nothing here needs a
network, Kubernetes or ML Metadata.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from pipelines.config import MetadataConfig, PipelineConfig
from pipelines.errors import ConfigError
from pipelines.pipeline import Resolvers, create_pipeline

KUBEFLOW_V2 = "kubeflow-v2"
TARGETS = (KUBEFLOW_V2,)
# Placeholders: the user builds and pushes the image and names real buckets (docs/orchestration.md).
DEFAULT_IMAGE = "nightly-tfx:latest"
DEFAULT_PIPELINE_ROOT = "gs://YOUR_BUCKET/pipeline_root"
DEFAULT_DATA_ROOT = "gs://YOUR_BUCKET/data/incoming"
DEFAULT_SERVING_DIR = "gs://YOUR_BUCKET/serving/models/taxi"
# Where the image holds the curated schema (the project is installed at /pipeline in the image).
DEFAULT_SCHEMA_FILE = "/pipeline/schemas/taxi/schema.pbtxt"


@dataclasses.dataclass(frozen=True)
class KubeflowOptions:
    """Where the compiled pipeline runs and reads: each default is a placeholder to replace."""

    span_date: dt.date
    image: str = DEFAULT_IMAGE
    pipeline_root: str = DEFAULT_PIPELINE_ROOT
    data_root: str = DEFAULT_DATA_ROOT
    serving_dir: str = DEFAULT_SERVING_DIR
    schema_file: str = DEFAULT_SCHEMA_FILE

    def placeholders(self) -> list:
        """Names of the options still at their placeholder default."""
        defaults = {"image": DEFAULT_IMAGE, "pipeline_root": DEFAULT_PIPELINE_ROOT, "data_root": DEFAULT_DATA_ROOT,
                    "serving_dir": DEFAULT_SERVING_DIR}
        return [name for name, value in defaults.items() if getattr(self, name) == value]

    def check(self) -> "KubeflowOptions":
        for name in ("image", "pipeline_root", "data_root", "serving_dir", "schema_file"):
            if not getattr(self, name).strip():
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} is empty", f"pass {flag} VALUE (see `mlops compile --help`)")
        return self


class KubeflowResolvers(Resolvers):
    """Stock strategies the Kubeflow V2 compiler builds, in place of the project's (module docstring),
    and a condition on each data gate's verdict for the nodes after it."""

    def after_gate(self, verdict):
        """Nodes built in this context run only when the gate's verdict artifact says not blocked.

        Locally the node runner reads the verdict and stops the run; KFP has no node runner, so each
        task after the gate gets the condition (`triggerPolicy.condition`, CEL) and is skipped when
        the gate blocked: the served model stays. The gate writes `blocked` (0 or 1) on every output it
        publishes (components/verdict.py); KFP carries it as the artifact's metadata."""
        from tfx.dsl.experimental.conditionals.conditional import Cond

        from components.verdict import BLOCKED

        return Cond(verdict.future()[0].custom_property(BLOCKED) == 0)

    def previous_span_statistics(self, config: PipelineConfig):
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        # Resolved before this run's StatisticsGen: the newest statistics of an earlier run, even of
        # a span the gate blocked, or an older span backfilled later.
        return Resolver(
            strategy_class=LatestArtifactStrategy,
            statistics=Channel(type=standard_artifacts.ExampleStatistics),
        ).with_id("previous_span_statistics")

    def served_training_statistics(self, config: PipelineConfig):
        # Found locally through lineage (push -> model -> its training data -> statistics); no stock
        # strategy follows lineage, and LatestArtifactStrategy would repeat the previous-span baseline.
        return None

    def training_window(self, config: PipelineConfig):
        return None  # this span alone: kubeflow_config() sets window_days=1

    def analyzer_cache(self, config: PipelineConfig):
        return None  # one span a night: nothing to cache

    def tuned_hyperparameters(self, config: PipelineConfig):
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        # Stock: the newest tuning result. Unlike the local strategy it resolves nothing, rather than
        # an empty list, before the first tuning: run `mlops tune` (or the weekly DAG) once first.
        return Resolver(
            strategy_class=LatestArtifactStrategy,
            hyperparameters=Channel(type=standard_artifacts.HyperParameters),
        ).with_id("tuned_hyperparameters")

    def served_model(self, config: PipelineConfig):
        from tfx.dsl.components.common.resolver import Resolver
        from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
        from tfx.types import standard_artifacts
        from tfx.types.channel import Channel

        # Stock TFX's baseline: the newest blessed model. After a rollback that is not the served one.
        return Resolver(
            strategy_class=LatestBlessedModelStrategy,
            model=Channel(type=standard_artifacts.Model),
            model_blessing=Channel(type=standard_artifacts.ModelBlessing),
        ).with_id("served_model")


def kubeflow_config(options: KubeflowOptions) -> PipelineConfig:
    """The PipelineConfig of the KFP variant: the options' places, one-span window, the default
    training and gate settings; nothing read from this machine."""
    return PipelineConfig(
        span_date=options.span_date,
        data_root=options.data_root,
        pipeline_root=options.pipeline_root,
        schema_path=options.schema_file,
        serving_model_dir=options.serving_dir,
        # Unused: Kubeflow / Vertex give every step their own ML Metadata connection.
        metadata=MetadataConfig(),
        window_days=1,
    )


def create_kubeflow_pipeline(options: KubeflowOptions):
    """The tfx Pipeline of the KFP variant (what `compile_kubeflow_v2` compiles)."""
    return create_pipeline(kubeflow_config(options), KubeflowResolvers())


def compile_kubeflow_v2(options: KubeflowOptions) -> dict:
    """The KFP PipelineJob of the nightly pipeline for `options.span_date`, as a JSON-ready dict."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kubeflow_v2

    options.check()
    pipeline = create_kubeflow_pipeline(options)
    runner = kubeflow_v2.KubeflowV2DagRunner(config=kubeflow_v2.KubeflowV2DagRunnerConfig(default_image=options.image))
    try:
        return runner.run(pipeline, write_out=False)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ConfigError(f"TFX's Kubeflow V2 compiler refused the pipeline: {err}",
                          "a node uses something the compiler does not support (pipelines/kubeflow.py lists "
                          "what it takes); change that node in KubeflowResolvers") from err


def task_names(job: dict) -> list:
    """The tasks of a compiled PipelineJob, sorted."""
    return sorted(job["pipelineSpec"]["root"]["dag"]["tasks"])


def render(job: dict) -> str:
    """Stable text: sorted keys, so that the same pipeline always gives the same file."""
    return json.dumps(job, indent=2, sort_keys=True) + "\n"


def write(job: dict, path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"{path} is a directory", "pass --out FILE.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(job))
    tmp.replace(path)
