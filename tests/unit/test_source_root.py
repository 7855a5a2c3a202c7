"""Modules that hand cronmesh's own source folder to a child process (a Python-target job, the
fence process) find it from their own path: it must still be the folder holding ``nodes``
wherever the module moved to (issue #20)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from nodes.executor import containment, jobenv

ROOT = Path(__file__).resolve().parents[2]


def test_a_python_job_imports_nodes_from_the_source_root() -> None:
    assert Path(jobenv.SOURCE_ROOT) == ROOT
    assert (Path(jobenv.SOURCE_ROOT) / "nodes" / "executor" / "pyjob.py").exists()


def test_the_fence_process_imports_nodes_from_the_source_root() -> None:
    source = inspect.getsource(containment)
    found = re.search(r"here = str\(Path\(__file__\)\.resolve\(\)\.parents\[(\d)\]\)", source)
    assert found is not None
    here = Path(containment.__file__).resolve().parents[int(found.group(1))]
    assert here == ROOT and (here / "nodes" / "executor" / "fence.py").exists()
