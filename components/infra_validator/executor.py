"""Servable before pushed: the candidate in the project's own model server, answering real rows.

The GatedEvaluator calls the candidate's SavedModel in the pipeline's process; the model server
loads it differently (its own load checks, warm-up, the signature defs clients see, REST and gRPC
encodings). A model that evaluates well can still fail there: a signature dropped by a module
file, a checkpoint that does not restore, an input the server cannot feed. Pushing it would make
the server keep the old version (it skips a version that fails to load) or, worse, serve a version
whose second signature answers errors. This executor finds out first, in a throwaway server
(components/infra_validator/candidate_server.py), and writes TFX's InfraBlessing, which the
AtomicPusher requires.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import BLESSING_KEY, EXAMPLES_KEY, MODEL_KEY
from tfx.utils import io_utils, path_utils

from components.infra_validator import spec as S
from components.infra_validator.candidate_server import CandidateServer, NotServable
from components.infra_validator.probes import probe_all, read_examples

log = logging.getLogger(__name__)

EVAL_SPLIT = "eval"
SERVER_LOG = "server.log"  # in the blessing's folder: the throwaway server's own log


def mark(blessing: types.Artifact, blessed: bool, reason: str) -> None:
    """The verdict as TFX's InfraValidator writes it (file + `blessed`), plus our `reason`."""
    name = S.BLESSED_FILE if blessed else S.NOT_BLESSED_FILE
    io_utils.write_string_file(str(Path(blessing.uri) / name), "")
    blessing.set_int_custom_property(S.BLESSED, 1 if blessed else 0)
    blessing.set_string_custom_property(S.REASON, reason)
    log.info("infra validation: %s (%s)", "blessed" if blessed else "NOT blessed", reason)


def eval_files(examples: List[types.Artifact]) -> List[str]:
    import tensorflow as tf

    files: List[str] = []
    for uri in artifact_utils.get_split_uris(examples, EVAL_SPLIT):
        files.extend(sorted(tf.io.gfile.glob(io_utils.all_files_pattern(uri))))
    return files


class Executor(base_executor.BaseExecutor):
    """Serves the candidate in a throwaway `mlops serve` and calls every signature (the
    InfraValidator's executor).

    Do() reads the `model` input, the `examples` input (its eval split: the first `num_examples`
    rows become the requests), the optional `model_blessing`, and the `model_name`,
    `required_signatures`, `num_examples` and `timeout_seconds` execution properties. It writes
    the `blessing` output: an InfraBlessing with an INFRA_BLESSED or INFRA_NOT_BLESSED file and
    `blessed` 1/0 (as TFX's InfraValidator), `reason`, the timings and, when the server answered,
    the signatures it served. The server's log is `server.log` in the blessing's folder. The server
    process never outlives Do(), whatever happens.
    """

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        started = time.monotonic()
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        blessing.set_int_custom_property(S.MODEL_ID, model.id)
        evaluator_blessings = input_dict.get(S.MODEL_BLESSING_KEY) or []
        if evaluator_blessings and not model_utils.is_model_blessed(evaluator_blessings[0]):
            return mark(blessing, False, S.NOT_EVALUATOR_BLESSED)  # nothing to push: spend nothing

        rows = int(exec_properties.get(S.NUM_EXAMPLES_KEY) or S.DEFAULT_NUM_EXAMPLES)
        timeout = float(exec_properties.get(S.TIMEOUT_SECONDS_KEY) or S.DEFAULT_TIMEOUT_SECONDS)
        name = exec_properties.get(S.MODEL_NAME_KEY) or "model"
        required = [s for s in (exec_properties.get(S.REQUIRED_SIGNATURES_KEY) or "").split(",") if s]
        model_dir = Path(path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)))
        Path(blessing.uri).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="infra-validator-") as workdir:
            server = CandidateServer(model_dir, name, Path(workdir), Path(blessing.uri) / SERVER_LOG)
            try:
                # The rows are read while the server imports TensorFlow and loads the candidate.
                server_started = time.monotonic()
                examples = self._start(server, timeout, input_dict, rows, blessing)
                blessing.set_float_custom_property(S.SERVER_START_SECONDS, round(time.monotonic() - server_started, 3))
                requests_started = time.monotonic()
                signatures = probe_all(server.rest_url, server.grpc_target, name, examples, required)
                blessing.set_float_custom_property(S.REQUESTS_SECONDS, round(time.monotonic() - requests_started, 3))
                blessing.set_int_custom_property(S.REQUESTS_ANSWERED, 2 * len(signatures))
                blessing.set_string_custom_property(S.SIGNATURES, ",".join(signatures))
                verdict = (True, f"served by the model server and answered {len(examples)} rows of the eval "
                                 f"span through {', '.join(signatures)} over REST and gRPC")
            except NotServable as err:
                verdict = (False, str(err))
            finally:
                server.stop()
        blessing.set_float_custom_property(S.VALIDATION_SECONDS, round(time.monotonic() - started, 3))
        mark(blessing, *verdict)

    @staticmethod
    def _start(server: CandidateServer, timeout: float, input_dict, rows: int, blessing) -> List[bytes]:
        """Starts the server, reads the rows meanwhile, then waits for the candidate to load."""
        server.begin()
        blessing.set_int_custom_property(S.SERVER_PID, server.pid)
        examples = read_examples(eval_files(input_dict[EXAMPLES_KEY]), rows)
        if not examples:
            raise NotServable("the eval split has no rows to build requests from")
        server.finish_start(timeout)
        return examples
