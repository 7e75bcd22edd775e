"""TFX's Evaluator, plus three things stock TFX lacks.

1. When the baseline *is* the candidate (a rerun whose Trainer was served from cache), the
   candidate cannot beat itself: record "not blessed" with that reason and skip the TFMA run,
   which otherwise dominates the cost of a no-change rerun.
2. A slice guard: no monitored slice (with enough examples to mean something) may lose more
   than `slice_margin` of the headline metric against the served model. TFMA's per-slice
   thresholds cannot express "only slices with at least N examples".
3. The blessing carries a readable `reason`: which thresholds failed on which slices.

And it is faster: for the eval configs components/evaluator/fast.py covers (the pipeline's), TFMA's
metrics are computed in batches instead of one example at a time (same numbers, same files).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

from components.evaluator.metrics import SLICE_METRICS, SliceMetrics, read_slice_metrics, to_property
from components.evaluator.spec import MIN_SLICE_EXAMPLES_KEY, SLICE_GUARD_KEYS, SLICE_MARGIN_KEY

log = logging.getLogger(__name__)

REASON = "reason"


def _describe_failures(validation_result, limit: int = 5) -> str:
    failures = []
    for per_slice in validation_result.metric_validations_per_slice:
        slice_name = (
            ",".join(f"{c.column}={c.bytes_value.decode() if c.HasField('bytes_value') else c.int64_value}"
                     for c in per_slice.slice_key.single_slice_keys)
            or "overall"
        )
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            if failure.metric_key.is_diff:  # TFMA reports the difference to the baseline here
                detail = f"changed by {value:+.4f} against the served model, short of the {_threshold(failure)}"
            else:
                detail = f"value {value:.4f} fails {_threshold(failure)}"
            detail = failure.message or detail
            failures.append(f"{failure.metric_key.name} on {slice_name}: {detail}")
    if not failures:
        return "validation failed"
    more = f" (+{len(failures) - limit} more)" if len(failures) > limit else ""
    return "; ".join(failures[:limit]) + more


HEADLINE_METRIC = "auc"


def slice_regressions(candidate: SliceMetrics, baseline: SliceMetrics, margin: float, min_examples: int) -> List[str]:
    """Monitored slices whose headline metric fell more than `margin` below the served model's
    (`candidate`, `baseline`: metrics per slice, components/evaluator/metrics.py). A slice where the
    metric is undefined for either model (one label class only) cannot regress."""
    regressions = []
    for name, values in sorted(candidate.items()):
        if name == "overall":
            continue  # TFMA's thresholds gate it
        count = values.get("example_count") or 0
        ours = values.get(HEADLINE_METRIC)
        served = baseline.get(name, {}).get(HEADLINE_METRIC)
        if count < min_examples or ours is None or served is None:
            continue
        if ours < served - margin:
            regressions.append(
                f"{HEADLINE_METRIC} on {name} fell to {ours:.4f} from the served {served:.4f} "
                f"(allowed loss {margin}, {int(count)} examples)"
            )
    return regressions


def _threshold(failure) -> str:
    threshold = failure.metric_threshold
    if threshold.HasField("value_threshold"):
        return f"floor {threshold.value_threshold.lower_bound.value}"
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        if change.HasField("relative"):
            return f"required relative gain {change.relative.value} over the served model"
        return f"allowed change {change.absolute.value} against the served model"
    return "its threshold"


class Executor(tfx_evaluator_executor.Executor):
    """TFX's Evaluator executor plus the slice guard (the GatedEvaluator's executor).

    Do() reads the `model` input, the optional `baseline_model` and, unless the baseline is the
    candidate itself, everything stock TFX's Evaluator reads (`examples`, `eval_config`, ...),
    plus the `slice_margin` and `min_slice_examples` execution properties (which TFX's executor
    does not get). It writes, as TFX's Evaluator does, the `evaluation` output (TFMA's results:
    computed in batches by components/evaluator/fast.py when it covers the eval config, by TFMA's
    Beam pipeline otherwise) and the `blessing` output (BLESSED or NOT_BLESSED file and custom
    properties), then adds a `reason` custom property to the blessing. When the baseline is the candidate it skips TFMA,
    writes a NOT_BLESSED blessing with `evaluation_skipped` = 1, and leaves `evaluation` empty.
    """

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
        if baselines and baselines[0].id == model.id:
            reason = f"candidate model {model.id} is the model being served; nothing to compare"
            log.info("skipping evaluation: %s", reason)
            blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri)
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.NOT_BLESSED_VALUE)
            blessing.set_string_custom_property(REASON, reason)
            blessing.set_int_custom_property("evaluation_skipped", 1)
            io_utils.write_string_file(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), "")
            return

        import tensorflow_model_analysis as tfma

        tfma_properties = {k: v for k, v in exec_properties.items() if k not in SLICE_GUARD_KEYS}
        if not self._fast_evaluation(input_dict, output_dict, tfma_properties):
            # TFMA computes the loss through a Keras metric inside tf.function: keep AutoGraph out
            # of Keras' own code there too (a few seconds per model otherwise).
            from components.util.keras import skip_autograph_of_tf_keras

            skip_autograph_of_tf_keras()
            super().Do(input_dict, output_dict, tfma_properties)

        evaluation = artifact_utils.get_single_instance(output_dict[standard_component_specs.EVALUATION_KEY])
        evaluation_uri = evaluation.uri
        # The metrics per slice, readable from ML Metadata without TFMA (summary, lineage).
        candidate, served = read_slice_metrics(evaluation_uri)
        evaluation.set_string_custom_property(SLICE_METRICS, to_property(candidate, served))
        result = tfma.load_validation_result(evaluation_uri)
        if not result.validation_ok:
            blessing.set_string_custom_property(REASON, _describe_failures(result))
            return
        regressions = []
        if baselines:
            regressions = slice_regressions(
                candidate, served, float(exec_properties[SLICE_MARGIN_KEY]), int(exec_properties[MIN_SLICE_EXAMPLES_KEY])
            )
        if regressions:
            os.remove(os.path.join(blessing.uri, constants.BLESSED_FILE_NAME))
            io_utils.write_string_file(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME), "")
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, constants.NOT_BLESSED_VALUE)
            blessing.set_string_custom_property(REASON, "slice guard: " + "; ".join(regressions))
            return
        against = f"model {baselines[0].id}" if baselines else "the absolute thresholds (no model served yet)"
        blessing.set_string_custom_property(REASON, f"passed every threshold against {against}")

    def _fast_evaluation(self, input_dict, output_dict, exec_properties) -> bool:
        """Runs components/evaluator/fast.py instead of TFMA's Beam pipeline when it covers the eval
        config, and writes the blessing exactly as TFX's executor does; False when it does not
        (then TFMA runs, as in stock TFX)."""
        import tensorflow_model_analysis as tfma
        from tfx.utils import proto_utils

        from components.evaluator import fast

        text = exec_properties.get(standard_component_specs.EVAL_CONFIG_KEY)
        if not text or exec_properties.get(standard_component_specs.MODULE_FILE_KEY) or exec_properties.get(
                standard_component_specs.MODULE_PATH_KEY):
            return False
        eval_config = tfma.EvalConfig()
        proto_utils.json_to_proto(text, eval_config)
        try:
            return self._evaluate_fast(eval_config, input_dict, output_dict, exec_properties)
        except fast.NotCovered as reason:
            log.info("evaluating with TFMA's Beam pipeline: the fast evaluation does not cover %s", reason)
            return False

    def _evaluate_fast(self, eval_config, input_dict, output_dict, exec_properties) -> bool:
        """The fast evaluation and TFX's blessing; raises fast.NotCovered (before writing anything)
        when the config or the data needs TFMA's pipeline."""
        import tensorflow as tf
        import tensorflow_model_analysis as tfma
        from tfx.utils import json_utils, path_utils

        from components.evaluator import fast

        reason = fast.unsupported_reason(eval_config)
        if reason:
            raise fast.NotCovered(reason)
        candidate = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
        baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        eval_config = tfma.utils.update_eval_config_with_defaults(eval_config, has_baseline=bool(baselines),
                                                                  rubber_stamp=True)
        tfma.utils.verify_eval_config(eval_config)
        model_paths = {}
        for spec in eval_config.model_specs:
            artifact = baselines[0] if spec.is_baseline else candidate
            model_paths[spec.name] = path_utils.serving_model_path(
                artifact.uri, path_utils.is_old_model_artifact(artifact))
        splits = json_utils.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY, "null")) or ["eval"]
        files = []
        for split in splits:
            for uri in artifact_utils.get_split_uris(input_dict[standard_component_specs.EXAMPLES_KEY], split):
                files.extend(sorted(tf.io.gfile.glob(io_utils.all_files_pattern(uri))))
        output_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.EVALUATION_KEY])
        # TFX's executor never rubber-stamps (its shared models are built without it).
        result = fast.evaluate(eval_config, model_paths, files, output_uri, rubber_stamp=False)

        if not tfma.metrics.metric_thresholds_from_metrics_specs(eval_config.metrics_specs, eval_config=eval_config):
            return True  # as TFX's executor: no threshold, no blessing
        blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
        blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, candidate.uri)
        blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, candidate.id)
        if baselines:
            blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baselines[0].uri)
            blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baselines[0].id)
        if "current_component_id" in exec_properties:
            blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
        name = constants.BLESSED_FILE_NAME if result.validation_ok else constants.NOT_BLESSED_FILE_NAME
        io_utils.write_string_file(os.path.join(blessing.uri, name), "")
        blessing.set_int_custom_property(
            constants.ARTIFACT_PROPERTY_BLESSED_KEY,
            constants.BLESSED_VALUE if result.validation_ok else constants.NOT_BLESSED_VALUE)
        return True

