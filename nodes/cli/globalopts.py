"""The global options (``--api``, ``-p/--project``, ``-o/--output``, ``--token``) after any command
too: ``cronmesh run list -o json`` as well as ``cronmesh -o json run list`` (D288).

Every sub-command parser gets a copy of each global option with ``default=SUPPRESS``: argparse
copies a sub-parser's values over the top-level ones, and a suppressed default copies nothing, so
the top-level value (or its environment default) stands unless the option is given after the
command, and then the later position wins. A command that already owns one of the option strings
or the destination (``group grant --project``, ``plan --project``, ``hook send --token``,
``group targets PROJECT``) keeps its own meaning and does not get that global option.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

GLOBAL_DESTS = ("api", "project", "output", "token")
GROUP_TITLE = "global options (before or after the command)"


def _children(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases: one parser, once
                yield child
                yield from _children(child)


def _owns(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    """Whether ``parser`` already has an option string or the destination of ``action``."""
    if any(s in parser._option_string_actions for s in action.option_strings):
        return True
    return any(a.dest == action.dest for a in parser._actions)


def add_after_commands(root: argparse.ArgumentParser, hidden: tuple[str, ...] = ()) -> None:
    """Copy ``root``'s global options into every sub-command parser; in the parsers whose ``prog``
    ends with one of ``hidden`` (``cronmesh node``, whose help is grouped by hand) they are
    accepted but not shown."""
    globals_ = [a for a in root._actions if a.dest in GLOBAL_DESTS and a.option_strings]
    for parser in _children(root):
        quiet = parser.prog.endswith(hidden) if hidden else False
        group = None if quiet else parser.add_argument_group(GROUP_TITLE)
        for action in globals_:
            if _owns(parser, action):
                continue
            target = parser if group is None else group
            target.add_argument(
                *action.option_strings,
                dest=action.dest,
                choices=action.choices,
                metavar=action.metavar,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS if quiet else action.help,
            )
