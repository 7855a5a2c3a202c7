"""YAML as cronmesh reads it: only ``true``/``false`` are booleans (YAML 1.2), so keys and values
such as ``on``, ``off``, ``yes``, ``no``, ``y``, ``n`` stay strings (``on: [failure]`` in a
notification rule must not become ``True: [failure]``, as PyYAML's YAML 1.1 rules would make it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml


class Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass


def load_all(text: str) -> Iterator[Any]:
    yield from yaml.load_all(text, Loader=Loader)
