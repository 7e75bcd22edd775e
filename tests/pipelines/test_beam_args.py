"""The Beam arguments every TFX component gets keep the DirectRunner local and predictable."""

from __future__ import annotations

import datetime as dt
import logging

from pipelines.config import PipelineConfig, ProjectPaths


def config(tmp_path, **overrides) -> PipelineConfig:
    return PipelineConfig.for_project(ProjectPaths(tmp_path), dt.date(2026, 11, 20), **overrides)


def test_a_real_beam_pipeline_with_our_arguments_never_tries_the_prism_runner(tmp_path, caplog):
    # Left alone, Beam's DirectRunner first tries Prism, downloading a Go binary from GitHub at run
    # time (here: fails, leaves /tmp/beam-temp*; elsewhere: runs on an untested runner).
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")
    with beam.Pipeline(options=PipelineOptions(config(tmp_path).beam_pipeline_args)) as pipeline:
        assert_that(pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    messages = [r.getMessage() for r in caplog.records]
    assert not any("Prism" in m for m in messages), messages


def test_without_the_pin_beam_would_try_prism(tmp_path, caplog, monkeypatch):
    # The check above can fail: the same pipeline without our arguments goes to Prism first.
    import tempfile

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    # Prism's failed start leaves a beam-temp* directory behind: under tmp_path, not in /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as pipeline:
        pipeline | beam.Create([1]) | beam.Map(lambda x: x)
    assert any("PrismRunner" in r.getMessage() for r in caplog.records)


def test_a_runner_chosen_by_the_user_is_left_alone(tmp_path):
    args = config(tmp_path, extra_beam_args=("--runner=PrismRunner",)).beam_pipeline_args
    assert "--runner=PrismRunner" in args
    assert not any(a.startswith("--update_compatibility_version") for a in args)
