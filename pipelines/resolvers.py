"""Resolver strategies that pick baselines from ML Metadata.

- `ServedModelStrategy`: the model behind the newest successful push. That is "the model in
  production", rollbacks included (stock TFX's latest-blessed-model is not, after a rollback).
- `PreviousSpanStatisticsStrategy`: statistics of the newest span older than the one being run.
- `ModelByIdStrategy`: one model by id, with its blessing (what a rollback pushes again).
"""

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

# Kept equal to components.pusher.executor's names; importing it here would pull TFX's
# Pusher dependencies into the compile step.
PUSHED = "pushed"
SOURCE_MODEL_ID = "source_model_id"


class ServedModelStrategy(resolver.ResolverStrategy):
    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        models = {m.id: m for m in input_dict["model"]}
        pushes = sorted(
            (p for p in input_dict["pushed_model"] if p.get_int_custom_property(PUSHED) == 1),
            key=lambda p: p.id,
            reverse=True,
        )
        for push in pushes:
            model = models.get(push.get_int_custom_property(SOURCE_MODEL_ID))
            if model is not None:
                return {"model": [model], "pushed_model": [push]}
        return {"model": [], "pushed_model": []}


class PreviousSpanStatisticsStrategy(resolver.ResolverStrategy):
    def __init__(self, current_span: int):
        self._current_span = current_span

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        older = [s for s in input_dict["statistics"] if 0 <= s.span < self._current_span]
        if not older:
            return {"statistics": []}
        return {"statistics": [max(older, key=lambda s: (s.span, s.id))]}


class ModelByIdStrategy(resolver.ResolverStrategy):
    """The model with one artifact id and the blessing the Evaluator gave it (rollback)."""

    def __init__(self, model_id: int):
        self._model_id = model_id

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Optional[Dict]:
        models = [m for m in input_dict["model"] if m.id == self._model_id]
        blessings = [
            b for b in input_dict["blessing"]
            if b.get_int_custom_property("current_model_id") == self._model_id
            and b.get_int_custom_property("blessed") == 1
        ]
        return {"model": models, "blessing": sorted(blessings, key=lambda b: b.id)[-1:]}
