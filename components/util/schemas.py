"""Reading the Schema artifact that ImportSchemaGen publishes."""

from __future__ import annotations


def load_schema(schema_artifact):
    """The `tensorflow_metadata` Schema proto in a Schema artifact's folder."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    schema_file = io_utils.get_only_uri_in_dir(schema_artifact.uri)
    return io_utils.parse_pbtxt_file(schema_file, schema_pb2.Schema())
