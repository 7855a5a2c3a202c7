"""Hints for a mistyped name: the field a document meant (``timout`` → ``timeout``), the time
zone (``Paris`` → ``Europe/Paris``), the cron descriptor (``@dayly`` → ``@daily``). Pure: what a
new user's typo gets instead of a bare "unknown" (D506).
"""

from __future__ import annotations

import difflib
import functools
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin
from zoneinfo import available_timezones

from pydantic import BaseModel

# Field lists up to this long are named in full when no field is close to the typo.
MAX_LISTED = 12


def closest(word: str, choices: Iterable[str], cutoff: float = 0.75) -> str | None:
    """The choice ``word`` most likely meant: the same but for case, else the nearest spelling
    (difflib's ratio ≥ ``cutoff``), else None."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[found[0]] if found else None


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for arg in get_args(tp) for m in _members(arg) if m is not type(None)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _step(tp: Any, part: str | int) -> Any:
    """The type found at ``part`` inside a value of type ``tp`` (None when unknown)."""
    for member in _members(tp):
        if _is_model(member):
            if isinstance(part, str):
                if part == member.__name__:  # pydantic names a union's member in the path
                    return member
                for name, f in member.model_fields.items():
                    if part in (name, f.alias):
                        return f.annotation
            continue
        origin, args = get_origin(member), get_args(member)
        if isinstance(part, int) and origin in (list, tuple, set, frozenset, Sequence) and args:
            return args[0]
        if isinstance(part, str) and origin in (dict, Mapping) and len(args) == 2:
            return args[1]
    return None


def unknown_field_hint(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """What to add to "unknown field" for the field at ``loc`` of a ``model`` document: "did
    you mean 'timeout'?", or the fields that place takes when they are few; "" when unknown."""
    tp: Any = model
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return ""
    names = [n for m in _members(tp) if _is_model(m) for n in _field_names(m)]
    if not names or not isinstance(loc[-1], str):
        return ""
    guess = closest(loc[-1], names)
    if guess is not None:
        return f"; did you mean {guess!r}?"
    if len(names) <= MAX_LISTED:
        return f"; the fields here are {', '.join(sorted(names))}"
    return ""


@functools.lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


_OFFSET = re.compile(r"(?:UTC|GMT)\s*([+-])\s*(\d{1,2})(?::?00)?", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _cities() -> dict[str, str]:
    """The last part of each zone name (``New_York``) → the zone, where only one zone has it."""
    seen: dict[str, list[str]] = {}
    for zone in _zones():
        if "/" in zone and not zone.startswith(("Etc/", "SystemV/")):
            seen.setdefault(zone.rsplit("/", 1)[-1], []).append(zone)
    return {city: zones[0] for city, zones in seen.items() if len(zones) == 1}


def timezone_hint(name: str) -> str:
    """What to add to "unknown time zone": the IANA zone ``name`` likely meant (any case, a city
    alone: ``Paris`` → ``Europe/Paris``; ``UTC+1`` → ``Etc/GMT-1``), else an example."""
    offset = _OFFSET.fullmatch(name.strip())
    if offset is not None and 0 < int(offset[2]) <= 12:
        sign = "-" if offset[1] == "+" else "+"  # POSIX: Etc/GMT-1 is one hour AHEAD of UTC
        return (
            f"; a fixed offset is 'Etc/GMT{sign}{int(offset[2])}' (IANA inverts the sign), but a"
            " region such as 'Europe/Paris' also follows its daylight-saving time"
        )
    wanted = name.strip()
    cities = _cities()
    by_city = {c.lower(): z for c, z in cities.items()}
    exact = {z.lower(): z for z in _zones()}.get(wanted.lower())
    guess = exact or by_city.get(wanted.replace(" ", "_").lower())
    if guess is None and wanted.isalpha() and wanted.isupper() and len(wanted) <= 5:
        return (  # CEST, PST: an abbreviation names no one zone; a near spelling misleads
            f"; an abbreviation such as {wanted!r} is not a zone: use an IANA name such as"
            " 'Europe/Paris', 'America/New_York' or 'UTC'"
        )
    region = next((z for z in _zones() if z.lower().startswith(wanted.lower() + "/")), None)
    if guess is None and wanted and region is not None:
        return f"; {wanted!r} is a region: name a zone in it, such as {region!r}"
    guess = guess or closest(wanted, _zones())
    if guess is None:  # a city misspelt: stricter, short names are near too many others
        city = closest(wanted.replace(" ", "_"), cities, cutoff=0.85)
        guess = cities[city] if city is not None else None
    if guess is not None:
        return f"; did you mean {guess!r}?"
    return "; use an IANA name such as 'Europe/Paris', 'America/New_York' or 'UTC'"


def descriptor_hint(word: str, known: Iterable[str]) -> str:
    """What to add to "unknown descriptor": the one meant, or the list of them."""
    names = sorted({*known, "@every"})
    guess = closest(word, names)
    if guess is not None:
        return f"; did you mean {guess!r}?"
    listed = ", ".join(n for n in names if n != "@every")
    return f"; the descriptors are {listed} and @every <duration>"
