"""Our TFX components, one folder each: component.py (spec) and executor.py (work)."""
