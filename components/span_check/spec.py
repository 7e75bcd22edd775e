"""The SpanCheck's input, output and execution-property keys, each named once.

Both the ComponentSpec (component.py) and the executor (executor.py) use these names, as TFX's
components share `tfx.types.standard_component_specs`. A key that means what a stock component
means by it is TFX's own constant: `schema` (SCHEMA_KEY, the input Schema, as ExampleValidator's)
and `input_base` (INPUT_BASE_KEY, the data root, as CsvExampleGen's). The values are ML Metadata
keys of existing runs and caches: never change one.
"""

# Output: an ExampleAnomalies artifact holding the verdict, report.txt and findings.json.
REPORT_KEY = "report"

# Custom property of the report: JSON list of {"name", "bytes", "sha256", "rows"}, one per CSV file read.
INPUT_FILES = "input_files"

# Execution properties.
SPAN_DATE_KEY = "span_date"  # ISO date: the span folder under input_base
MAX_DUPLICATE_FRACTION_KEY = "max_duplicate_fraction"
FINGERPRINT_KEY = "fingerprint"

# More duplicate rows than this fraction of the span block it (pipelines' DataGateConfig default too).
DEFAULT_MAX_DUPLICATE_FRACTION = 0.05
