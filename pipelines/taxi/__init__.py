"""The Chicago taxi model: feature lists, `preprocessing_fn` (Transform) and `run_fn` (Trainer)."""
