"""YAML as cronmesh reads it: only ``true``/``false`` are booleans (YAML 1.2), so keys and values
such as ``on``, ``off``, ``yes``, ``no``, ``y``, ``n`` stay strings (``on: [failure]`` in a
notification rule must not become ``True: [failure]``, as PyYAML's YAML 1.1 rules would make it),
and dates and timestamps stay the strings they were written as (``dates: [2026-12-24]`` of a
calendar and ``start: 2026-12-20T00:00:00+01:00`` of a blackout window go to the API as written:
PyYAML would make ``date``/``datetime`` objects, which JSON cannot carry).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import yaml


class Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


_AS_STRINGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _AS_STRINGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass


def load_all(text: str, name: str | None = None) -> Iterator[Any]:
    """The documents of ``text``; a syntax error names ``name`` (the file) instead of PyYAML's
    ``"<unicode string>"`` when given (D509)."""
    if name is None:
        yield from yaml.load_all(text, Loader=Loader)
        return
    stream = io.StringIO(text)
    stream.name = name  # PyYAML's Reader names a file-like stream's ``name`` in its marks
    yield from yaml.load_all(stream, Loader=Loader)
