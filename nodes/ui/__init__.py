"""The web UI: static HTML, CSS and JavaScript modules served by every node (no build step)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
