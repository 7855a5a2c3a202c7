"""``python -m nodes.cli``: the ``cronmesh`` command."""

import sys

from nodes.cli.main import main

sys.exit(main())
