"""Global options after the command (D288): `-o`, `-p/--project`, `--api` and `--token` parse
after every command as well as before it, and the later position wins."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from nodes.cli.globalopts import GLOBAL_DESTS
from nodes.cli.main import build_parser


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from leaves(child, (*path, name))


def _value(action: argparse.Action) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    return "1" if action.type in (int, float) else "x"


def minimal_args(parser: argparse.ArgumentParser) -> list[str]:
    """The fewest words ``parser`` accepts: its required positionals and options, plain values."""
    out: list[str] = []
    for action in parser._actions:
        if action.option_strings:
            continue
        if action.nargs in (None, "+"):
            out.append(_value(action))
        elif isinstance(action.nargs, int):
            out += [_value(action)] * action.nargs
    groups = [g for g in parser._mutually_exclusive_groups if g.required]
    picked = [g._group_actions[0] for g in groups]
    for action in parser._actions:
        if action.option_strings and (action.required or action in picked):
            out.append(action.option_strings[0])
            if action.nargs != 0:
                out.append(_value(action))
    return out


PARSER = build_parser()  # parse_args leaves it as it was; building one takes a while
LEAVES = sorted(leaves(PARSER))
GLOBALS = {a.dest: a for a in PARSER._actions if a.dest in GLOBAL_DESTS}


def owned(leaf: argparse.ArgumentParser) -> set[str]:
    """The global options ``leaf`` has its own meaning for: an option string or the destination."""
    own = [a for a in leaf._actions if a.default is not argparse.SUPPRESS]
    return {
        dest
        for dest, g in GLOBALS.items()
        if any(a.dest == dest or set(a.option_strings) & set(g.option_strings) for a in own)
    }


def test_the_walk_reaches_every_command():
    paths = {" ".join(p) for p, _ in LEAVES}
    assert {"run list", "job get", "job list", "status", "completion", "node"} <= paths
    assert len(paths) > 60


@pytest.mark.parametrize(("path", "leaf"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_output_parses_after_every_command_and_the_later_position_wins(path, leaf):
    argv = [*path, *minimal_args(leaf)]
    assert PARSER.parse_args(argv).output == "table"  # the minimal words do parse
    assert PARSER.parse_args([*argv, "-o", "json"]).output == "json"
    assert PARSER.parse_args([*argv, "--output", "yaml"]).output == "yaml"
    assert PARSER.parse_args(["-o", "yaml", *argv]).output == "yaml"
    assert PARSER.parse_args(["-o", "yaml", *argv, "-o", "json"]).output == "json"


AFTER = {"api": ["--api", "http://after:2"], "project": ["-p", "after"], "token": ["--token", "t1"]}
BEFORE = {"api": "http://before:1", "project": "before", "token": "t0"}


@pytest.mark.parametrize(("path", "leaf"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_api_project_and_token_parse_after_every_command_that_does_not_own_them(path, leaf):
    argv = [*path, *minimal_args(leaf)]
    base = ["--api", BEFORE["api"], "-p", BEFORE["project"], "--token", BEFORE["token"]]
    for dest, words in AFTER.items():
        if dest in owned(leaf):
            continue
        assert getattr(PARSER.parse_args([*base, *argv, *words]), dest) == words[1], (dest, argv)
        assert getattr(PARSER.parse_args([*base, *argv]), dest) == BEFORE[dest]


def test_only_these_commands_own_a_global_option():
    got = {(" ".join(p), d) for p, leaf in LEAVES for d in owned(leaf)}
    assert got == {
        ("group grant", "project"),
        ("group revoke", "project"),
        ("group targets", "project"),
        ("plan", "project"),
        ("hook send", "token"),
    }


def test_a_command_that_owns_project_keeps_its_meaning():
    args = PARSER.parse_args(["-p", "mine", "group", "grant", "g", "--project", "theirs"])
    assert args.project == "theirs"  # the grant's target, as before
    args = PARSER.parse_args(["-p", "mine", "plan", "--project", "p2"])
    assert (args.project, args.plan_project) == ("mine", "p2")
    args = PARSER.parse_args(["--token", "t", "hook", "send", "h", "--token"])
    assert (args.token, args.as_token) == ("t", True)


def test_an_intermediate_position_parses_too():
    args = PARSER.parse_args(["run", "-o", "json", "list", "--limit", "3"])
    assert (args.output, args.limit) == ("json", 3)
    with pytest.raises(SystemExit):
        PARSER.parse_args(["run", "list", "-o", "xml"])  # the choices still hold


def test_help_shows_the_global_options_after_a_command(capsys):
    with pytest.raises(SystemExit):
        PARSER.parse_args(["run", "list", "--help"])
    out = capsys.readouterr().out
    assert "global options (before or after the command):" in out and "-o {table,json,yaml}" in out
