"""The CLI a new user meets (issue #22 item 6): every command and option has a one-line help,
`cronmesh node --help` groups its flags, `nodes` holds the admin actions (the old spelling still
works), `--version`, and shell completion generated from the parser (D251, D252)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from nodes.cli import completion
from nodes.cli.help_texts import NODE_FLAG_GROUPS, version
from nodes.cli.main import build_parser, main
from tests.conftest import ROOT


def walk(
    parser: argparse.ArgumentParser, path: str = "cronmesh"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, f"{path} {name}")


def test_every_command_and_option_has_a_one_line_help():
    missing = []
    for path, parser in walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in action._choices_actions}
                missing += [f"{path} {n} (command)" for n in action.choices if not helps.get(n)]
                continue
            if action.help is None or not action.help.strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    assert len(list(walk(build_parser()))) > 60  # the walk does reach the sub-commands


def test_run_cancel_and_abort_say_how_they_differ(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "SIGTERM, SIGKILL after the job's kill_grace" in out
    assert "SIGKILL its process tree, no grace" in out


def test_node_help_groups_its_flags_and_points_at_nodes_for_admin(capsys):
    parser = dict(walk(build_parser()))["cronmesh node"]
    titles = [
        g.title
        for g in parser._action_groups
        if any(a.help != argparse.SUPPRESS for a in g._group_actions)
    ]
    assert titles == ["options", *[t for t, _, _ in NODE_FLAG_GROUPS]]  # no "other" group
    options = next(g for g in parser._action_groups if g.title == "options")
    shown = [a.dest for a in options._group_actions if a.help != argparse.SUPPRESS]
    assert shown == ["help"]
    with pytest.raises(SystemExit):
        main(["node", "--help"])
    out = capsys.readouterr().out
    assert "`cronmesh nodes`" in out and "ACTION" not in out and "--reason" not in out
    for title, _, _ in NODE_FLAG_GROUPS:
        assert f"\n{title}:\n" in out


def test_nodes_holds_the_admin_actions_and_the_old_spelling_still_parses(capsys):
    args = build_parser().parse_args(["nodes", "drain", "w1", "--reason", "kernel"])
    assert (args.node_action, args.node_target, args.reason) == ("drain", "w1", "kernel")
    old = build_parser().parse_args(["node", "drain", "w1", "--reason", "kernel"])
    assert (old.node_action, old.node_target, old.reason) == ("drain", "w1", "kernel")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nodes", "drain"])  # the NODE is required now
    assert "NODE" in capsys.readouterr().err


def test_the_old_spelling_warns(capsys):
    # an API nobody listens on: the action fails, after the deprecation note
    code = main(["--api", "http://127.0.0.1:9", "node", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert "`cronmesh node list` is deprecated" in err and "`cronmesh nodes list`" in err


def test_version_is_the_package_metadata():
    res = subprocess.run(
        [sys.executable, "-m", "nodes.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"cronmesh {version()}"
    assert version() != "unknown"  # the tree is installed (pip install -e) in the venv


def bash_complete(script: str, line: str) -> list[str]:
    """What bash's completion offers for ``line`` (the cursor at its end), compgen-style: the
    script is sourced and its function called with COMP_WORDS/COMP_CWORD as bash sets them."""
    words = line.split(" ")
    prog = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_cronmesh\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    res = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", prog],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert res.returncode == 0, res.stderr
    return sorted(w for w in res.stdout.splitlines() if w)


def test_bash_completion_script_is_valid_and_completes(tmp_path):
    script = completion.script(build_parser(), "bash")
    path = tmp_path / "cronmesh.bash"
    path.write_text(script)
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr

    assert bash_complete(script, "cronmesh jo") == ["job"]
    assert bash_complete(script, "cronmesh job a") == ["apply"]
    assert bash_complete(script, "cronmesh nod") == ["node", "nodes"]
    assert bash_complete(script, "cronmesh nodes d") == ["disable", "drain"]
    assert bash_complete(script, "cronmesh -o ") == ["json", "table", "yaml"]
    # global options with their values before the command, options of the sub-command
    assert bash_complete(script, "cronmesh -p ops --api http://x job trigger x --pa") == ["--param"]
    assert bash_complete(script, "cronmesh apply --") == [
        "--api",  # the global options also after the command (D288)
        "--dry-run",
        "--file",
        "--help",
        "--output",
        "--project",
        "--prune",
        "--token",
        "--yes",
    ]
    assert bash_complete(script, "cronmesh run list -o ") == ["json", "table", "yaml"]
    assert bash_complete(script, "cronmesh completion ") == ["bash", "zsh"]
    assert "--reason" not in bash_complete(script, "cronmesh node --")  # hidden, deprecated


def test_completion_command_prints_the_script(capsys):
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "complete -o bashdefault -o default -F _cronmesh cronmesh" in out
    assert main(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#compdef cronmesh") and '"cronmesh job" "' in out


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_script_is_valid_and_completes(tmp_path):
    path = tmp_path / "_cronmesh"
    path.write_text(completion.script(build_parser(), "zsh"))
    check = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr

    def offered(*words: str) -> list[str]:
        # outside a completion widget compadd is not there: a stand-in prints what it is given
        prog = (
            f"source {path}\n"
            'compadd() { shift; print -l -- "$@"; }\n'
            f"words=({' '.join(repr(w) for w in words)}); CURRENT={len(words)}\n"
            "_cronmesh\n"
        )
        res = subprocess.run(["zsh", "-f", "-c", prog], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return [w for w in res.stdout.split() if w.startswith(words[-1])]

    assert offered("cronmesh", "job", "a") == ["apply"]
    assert sorted(offered("cronmesh", "-o", "")) == ["json", "table", "yaml"]
    assert sorted(offered("cronmesh", "nodes", "d")) == ["disable", "drain"]


def test_a_word_the_shell_would_read_is_refused():
    with pytest.raises(ValueError, match="completion script"):
        completion._check(["ok", "$(rm -rf ~)"])
