"""Stock Transform and Trainer, taught the rolling window (the pipeline swaps in these executors).

The window resolver (pipelines/resolvers.py `WindowExamplesStrategy`) gives Transform the raw
Examples of the newest N spans that passed the data gates, oldest first; the newest is the span
this night ingested.

- `WindowTransformExecutor` runs tf.Transform unchanged (one analyzer-cache dataset per span and
  split, so the next night re-analyzes only its new span; nothing materialized), then stamps on
  its outputs what ML Metadata should say: the transform graph records which spans were read
  from the input cache and which were analyzed; the updated cache records the window's newest
  span and the fingerprint of the schema and preprocessing it is valid for (the cache resolver
  matches both).
- `WindowTrainerExecutor` (given the same raw Examples; run_fn applies the transform graph) trains
  on every split of the older spans and evaluates on the newest (held out); with one span it keeps
  stock behaviour (its train split trains, its eval split evaluates). The model records the spans
  it trained and evaluated on.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.components.transform import executor as transform_executor
from tfx.types import artifact_utils, standard_component_specs as keys
from tfx.utils import io_utils

from components.util.spans import span_date, span_of
from components.window.properties import (ANALYZED_SPANS, CACHE_FINGERPRINT, CACHED_SPANS, CUSTOM_CACHE_FINGERPRINT,
                                         CUSTOM_WINDOW_DAYS, EVAL_SPAN, TRAIN_SPANS, WINDOW_DAYS, WINDOW_END_SPAN,
                                         WINDOW_SPANS)


def _custom_config(exec_properties: Dict[str, Any]) -> dict:
    raw = exec_properties.get(keys.CUSTOM_CONFIG_KEY)
    if isinstance(raw, dict):
        return raw
    return json.loads(raw) if raw else {}


def _dates(artifacts: List[types.Artifact]) -> List[str]:
    return sorted({span_date(span_of(a)) for a in artifacts})


def _analyze_splits(exec_properties: Dict[str, Any], examples: List[types.Artifact]) -> List[str]:
    from tfx.components.transform import executor_utils

    config = executor_utils.ResolveSplitsConfig(exec_properties.get(keys.SPLITS_CONFIG_KEY), examples)
    return list(config.analyze)


def cached_dataset_spans(cache_dir: str, examples: List[types.Artifact], splits: List[str]) -> List[str]:
    """Dates of the spans whose every analyzed split has an entry in the analyzer cache at `cache_dir`.

    tf.Transform names a cache entry by its dataset key, which TFX derives from the dataset's file
    pattern (`transform_executor._Dataset`); the raw Examples of an old span keep their URI, so
    their entries are found again the next night."""
    if not cache_dir or not os.path.isdir(cache_dir):
        return []
    present = set(os.listdir(cache_dir))
    cached = []
    for artifact in examples:
        patterns = [io_utils.all_files_pattern(uri) for split in splits
                    for uri in artifact_utils.get_split_uris([artifact], split)]
        keys_of = [transform_executor._Dataset(p, "", 0, None).dataset_key.key for p in patterns]  # noqa: SLF001
        if keys_of and all(k in present for k in keys_of):
            cached.append(span_date(span_of(artifact)))
    return sorted(set(cached))


class WindowTransformExecutor(transform_executor.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        examples = input_dict[keys.EXAMPLES_KEY]
        caches = input_dict.get(keys.ANALYZER_CACHE_KEY) or []
        cached = cached_dataset_spans(caches[0].uri if caches else "", examples,
                                      _analyze_splits(exec_properties, examples))
        super().Do(input_dict, output_dict, exec_properties)
        window = _dates(examples)
        for graph in output_dict.get(keys.TRANSFORM_GRAPH_KEY) or []:
            graph.set_string_custom_property(WINDOW_SPANS, json.dumps(window))
            graph.set_string_custom_property(CACHED_SPANS, json.dumps(cached))
            graph.set_string_custom_property(ANALYZED_SPANS, json.dumps([d for d in window if d not in cached]))
        config = _custom_config(exec_properties)
        for cache in output_dict.get(keys.UPDATED_ANALYZER_CACHE_KEY) or []:
            cache.set_int_custom_property(WINDOW_END_SPAN, max(span_of(a) for a in examples))
            cache.set_string_custom_property(WINDOW_SPANS, json.dumps(window))
            cache.set_string_custom_property(CACHE_FINGERPRINT, str(config.get(CUSTOM_CACHE_FINGERPRINT, "")))


def split_window(examples: List[types.Artifact]):
    """(train artifacts, held-out artifacts): the newest span is held out when older ones exist;
    with a single span there is nothing older, and both are that span (split by its splits)."""
    newest = max(span_of(a) for a in examples)
    older = [a for a in examples if span_of(a) < newest]
    if not older:
        return examples, examples
    return older, [a for a in examples if span_of(a) == newest]


def _files(artifacts: List[types.Artifact], splits: List[str]) -> List[str]:
    return [io_utils.all_files_pattern(uri) for split in splits for uri in artifact_utils.get_split_uris(artifacts, split)]


def _split_names(artifacts: List[types.Artifact]) -> List[str]:
    names = [artifact_utils.decode_split_names(a.split_names) for a in artifacts]
    common = [n for n in names[0] if all(n in other for other in names[1:])]
    if not common:
        raise ValueError(f"the window's transformed examples share no split (they have {names}): "
                         "rerun the night with `--no-cache` so Transform writes them again")
    return common


class WindowTrainerExecutor(trainer_executor.GenericExecutor):
    def _GetFnArgs(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
                   exec_properties: Dict[str, Any]):
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        examples = input_dict[keys.EXAMPLES_KEY]
        train, held_out = split_window(examples)
        if held_out is not train:  # a real window: every split of the older spans trains
            fn_args.train_files = _files(train, _split_names(train))
            fn_args.eval_files = _files(held_out, _split_names(held_out))
        for model in output_dict.get(keys.MODEL_KEY) or []:
            model.set_string_custom_property(TRAIN_SPANS, json.dumps(_dates(train)))
            model.set_string_custom_property(EVAL_SPAN, span_date(max(span_of(a) for a in held_out)))
            model.set_int_custom_property(WINDOW_DAYS, int(_custom_config(exec_properties).get(CUSTOM_WINDOW_DAYS, 1)))
        return fn_args
