"""Node selectors: which nodes a job may run on, matched against node properties.

Grammar (comma-separated terms, all must hold): ``k=v``, ``k==v``, ``k!=v``, ``k in (a, b)``,
``k notin (a, b)``, ``k`` (property present), ``!k`` (absent). Empty selector: every node.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cluster.errors import InvalidInput

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-/]*"
_VALUE = r"[A-Za-z0-9_.\-/:]*"
_TERM = re.compile(
    rf"^\s*(?:(?P<neg>!)\s*(?P<absent>{_NAME})"
    rf"|(?P<key>{_NAME})\s*(?:(?P<op>==|!=|=)\s*(?P<value>{_VALUE})"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$"
)


@dataclass(frozen=True, slots=True)
class Term:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "absent"
    values: frozenset[str]

    def matches(self, props: Mapping[str, str]) -> bool:
        present = self.key in props
        value = props.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "absent":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values


def _split_terms(text: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return terms


@functools.lru_cache(maxsize=4096)
def parse_selector(text: str, field: str = "target.selector") -> tuple[Term, ...]:
    """Parse once per distinct text (cached: workers match every queued run on each dispatch)."""
    if not text.strip():
        return ()
    terms = []
    for raw in _split_terms(text):
        m = _TERM.match(raw)
        if not m:
            raise InvalidInput(f"invalid selector term {raw.strip()!r}", field=field)
        if m["absent"]:
            terms.append(Term(m["absent"], "absent", frozenset()))
        elif m["op"]:
            op = "!=" if m["op"] == "!=" else "="
            terms.append(Term(m["key"], op, frozenset([m["value"]])))
        elif m["setop"]:
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            if not values:
                raise InvalidInput(f"empty value list in {raw.strip()!r}", field=field)
            terms.append(Term(m["key"], m["setop"], values))
        else:
            terms.append(Term(m["key"], "exists", frozenset()))
    return tuple(terms)


def matches(terms: tuple[Term, ...], props: Mapping[str, str]) -> bool:
    return all(term.matches(props) for term in terms)
