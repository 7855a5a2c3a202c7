"""Logging of the daemon: JSON lines for log pipelines, coloured console lines on a TTY.

Every line goes through the same processors, including those of libraries that use the standard
``logging`` module (aiohttp, grpc, asyncio), so a JSON log stream never has a stray plain line.
The node id is bound for the whole process (``Node.run``), run and job for everything a run does
(the worker's ``_execute``, the notifier's deliveries), with ``structlog.contextvars``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def use_json(fmt: str, stream: TextIO) -> bool:
    return fmt == "json" or (fmt == "auto" and not stream.isatty())


def configure(fmt: str = "auto", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    json_out = use_json(fmt, out)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_out
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.format_exc_info if json_out else _passthrough,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (aiohttp, grpc, asyncio) render through the same chain.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if json_out else _passthrough,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_cronmesh", False):
            root.removeHandler(old)
    handler._cronmesh = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(max(level, logging.WARNING))  # libraries: warnings and errors only


def _passthrough(logger: Any, name: str, event: Any) -> Any:
    return event
