"""Operations commands of the CLI: inspect, apply/diff/export, notifications."""

from __future__ import annotations

from typing import Any


def add_ops_parsers(sub: Any) -> None:
    from nodes import cli_gitops, cli_inspect, cli_notify

    cli_inspect.add_parser(sub)
    cli_gitops.add_parsers(sub)
    cli_notify.add_parser(sub)
    cli_notify.add_settings_parser(sub)
