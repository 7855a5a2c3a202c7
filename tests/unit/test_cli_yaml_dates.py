"""The CLI's YAML keeps dates and timestamps as the strings written: the docs' calendar
(``dates: [2026-12-24]``) and blackout window (``start: 2026-12-20T00:00:00+01:00``) examples
must reach the API as JSON, not crash ``json.dumps`` with a ``date`` object."""

from __future__ import annotations

import json
from pathlib import Path

from nodes.cli.documents import load_documents
from nodes.cli.yamlio import load

CALENDAR_AND_WINDOW = """\
name: us-ca
holidays: [{country: US, subdivision: CA}]
dates: [2026-12-24, 2026-12-31]
---
name: year-end
start: 2026-12-20T00:00:00+01:00
end: 2027-01-04 00:00:00
action: skip
"""


def test_dates_and_timestamps_stay_strings(tmp_path: Path) -> None:
    f = tmp_path / "docs.yaml"
    f.write_text(CALENDAR_AND_WINDOW)
    calendar, window = load_documents(str(f))
    assert calendar["dates"] == ["2026-12-24", "2026-12-31"]
    assert window["start"] == "2026-12-20T00:00:00+01:00"
    assert window["end"] == "2027-01-04 00:00:00"
    json.dumps([calendar, window])  # what the CLI sends


def test_other_scalars_keep_their_types() -> None:
    doc = load("n: 3\nf: 0.5\nb: true\non: [failure]\nnull_: null\nat: '2026-12-24T18:00:00Z'\n")
    assert doc == {
        "n": 3,
        "f": 0.5,
        "b": True,
        "on": ["failure"],
        "null_": None,
        "at": "2026-12-24T18:00:00Z",
    }
