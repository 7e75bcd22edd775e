"""Names of what the window executors record in ML Metadata (no TFX import: resolvers, summary and
lineage read them)."""

TRAIN_SPANS = "train_spans"  # Model: JSON list of ISO dates
EVAL_SPAN = "eval_span"  # Model: ISO date
WINDOW_DAYS = "window_days"  # Model
WINDOW_SPANS = "window_spans"  # TransformGraph, TransformCache: JSON list of ISO dates
CACHED_SPANS = "cached_spans"  # TransformGraph: spans whose analysis came from the input cache
ANALYZED_SPANS = "analyzed_spans"  # TransformGraph: spans analyzed in this run
WINDOW_END_SPAN = "window_end_span"  # TransformCache: newest span number of the window it was built on
CACHE_FINGERPRINT = "cache_fingerprint"  # TransformCache, from custom_config
CUSTOM_CACHE_FINGERPRINT = "cache_fingerprint"  # key in Transform's custom_config
CUSTOM_WINDOW_DAYS = "window_days"  # key in the Trainer's custom_config
