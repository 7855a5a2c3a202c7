"""Runs a job's Python callable in its own process: ``python -m nodes.executor.pyjob``.

The worker passes ``{"callable": "pkg.module:func", "args": [...], "kwargs": {...}}`` in
``CRONMESH_PYTHON``; the return value, if JSON-serialisable, becomes the run's result (unless the
callable wrote ``CRONMESH_RESULT_FILE`` itself). An exception prints its traceback and exits 1.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any


def main() -> int:
    spec = json.loads(os.environ["CRONMESH_PYTHON"])
    module_name, _, attr = spec["callable"].partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        value = target(*spec.get("args", []), **spec.get("kwargs", {}))
    except Exception:
        traceback.print_exc()
        return 1
    result_file = os.environ.get("CRONMESH_RESULT_FILE")
    if value is not None and result_file and not os.path.exists(result_file):
        try:
            data = json.dumps(value)
        except (TypeError, ValueError) as exc:
            print(f"cronmesh: return value is not JSON-serialisable: {exc}", file=sys.stderr)
        else:
            with open(result_file, "w") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
