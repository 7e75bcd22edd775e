"""Our TFX components, one folder each, laid out like TFX's own.

- spec.py: the names of the component's own input, output and execution-property keys, each
  defined once (keys it shares with a stock component are TFX's `standard_component_specs`);
- component.py: the ComponentSpec and the component class (what, why, example, `Args:`);
- executor.py: the work (`Do()`), reading and writing through the same key names.
"""
