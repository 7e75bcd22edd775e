"""Helpers shared by the project's components (as TFX keeps `tfx/components/util/*_utils.py`).

The layer rule (docs/architecture.md): components may use `serving`, never `pipelines`; what a
component and the pipeline both need lives here, and `pipelines` imports it from here.
"""
