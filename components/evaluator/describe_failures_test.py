"""The blessing's `reason` reads right for both kinds of TFMA threshold failures."""

from tensorflow_model_analysis.proto import validation_result_pb2
from google.protobuf import text_format

from components.evaluator.executor import _describe_failures


def test_floor_and_relative_gain_failures_are_described_with_what_was_measured():
    result = text_format.Parse(
        """
        metric_validations_per_slice {
          failures {
            metric_key { name: "auc" }
            metric_value { double_value { value: 0.71 } }
            metric_threshold { value_threshold { lower_bound { value: 0.75 } } }
          }
          failures {
            metric_key { name: "auc" is_diff: true }
            metric_value { double_value { value: -0.0051 } }
            metric_threshold { change_threshold { relative { value: 0.01 } direction: HIGHER_IS_BETTER } }
          }
        }
        """,
        validation_result_pb2.ValidationResult(),
    )
    text = _describe_failures(result)
    assert "auc on overall: value 0.7100 fails floor 0.75" in text
    assert "changed by -0.0051 against the served model" in text
    assert "required relative gain 0.01" in text
    assert "value -0.0051" not in text  # the difference is not the metric's value
