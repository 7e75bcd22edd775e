"""HTTP-client and port helpers for the pipeline code: serving/net.py's, under the names the
pipeline modules (services, model_server, the CLI) have always imported."""

from serving.net import HOST, free_port, http, port_free

__all__ = ["HOST", "free_port", "http", "port_free"]
