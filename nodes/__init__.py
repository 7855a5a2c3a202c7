"""The cronmesh peer daemon: scheduler, worker, HTTP API, CLI."""

__version__ = "0.1.0"
