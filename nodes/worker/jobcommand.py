"""A job's command line and environment on this node: the node's allow-listed environment, the
job's own variables and secrets, the run's ``CRONMESH_*`` variables. Split from
``nodes.worker.executing`` (D471), its only user."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from cluster.models import Run


class JobCommand:
    """The command part of :class:`~nodes.worker.executing.Executing` (its state is the
    worker's)."""

    _base_env: dict[str, str]
    _python_path: str
    node_id: str

    def _command(
        self,
        run: Run,
        claim_rev: int,
        result_file: Path,
        secrets: Mapping[str, bytes] | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        env = self._base_env.copy()  # a dict copy, not a re-decoding of os.environ per run
        # The job's own env: plain values, and secrets (opened at start, never stored). Set
        # before the run variables, which it cannot name anyway (CRONMESH_* is refused).
        for name, value in run.snapshot.env.items():
            if isinstance(value, str):
                env[name] = value
            elif secrets is not None and value.secret in secrets:
                # bytes as given (no NUL): the surrogate escape gives them back unchanged at exec
                env[name] = secrets[value.secret].decode("utf-8", "surrogateescape")
        env.update(
            CRONMESH_RUN_ID=run.id,
            CRONMESH_PROJECT=run.project,
            CRONMESH_JOB=run.job,
            CRONMESH_ATTEMPT=str(run.attempt),
            CRONMESH_SCHEDULED_AT=(
                run.scheduled_at.isoformat().replace("+00:00", "Z") if run.scheduled_at else ""
            ),
            CRONMESH_NODE=self.node_id,
            CRONMESH_CLAIM_REVISION=str(claim_rev),
            CRONMESH_RESULT_FILE=str(result_file),
        )
        for name, value in run.parameters.items():
            env[f"CRONMESH_PARAM_{name.upper()}"] = value
        env.update(run.env)  # workflow tasks: execution id, task name, upstream results
        spec = run.snapshot
        if spec.python is not None:
            env["CRONMESH_PYTHON"] = spec.python.model_dump_json()
            env["PYTHONPATH"] = self._python_path
            return [sys.executable, "-m", "nodes.executor.pyjob"], env
        return ["/bin/sh", "-c", spec.command or ""], env
