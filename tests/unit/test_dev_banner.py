"""`cronmesh dev`'s banner: on ports other than the CLI's default every next command must reach
that cluster, not only `login` (a user who ran `cronmesh dev --port 18480` and then the banner's
`job apply` reached port 8080: nothing, or another cluster)."""

from __future__ import annotations

from nodes.cli.dev import next_steps


def test_default_port_needs_no_api_setting() -> None:
    text = next_steps(8080, "admin")
    assert "CRONMESH_API" not in text and "--api" not in text
    assert ".venv/bin/cronmesh login -u admin" in text
    assert "web UI: http://127.0.0.1:8080/" in text


def test_other_port_exports_the_api_before_every_command() -> None:
    text = next_steps(18480, "root")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first_command = next(i for i, line in enumerate(lines) if line.startswith(".venv/bin/"))
    assert lines[first_command - 1] == "export CRONMESH_API=http://127.0.0.1:18480"
    assert ".venv/bin/cronmesh login -u root" in lines
    assert "web UI: http://127.0.0.1:18480/" in text
