"""Which parameters a manual run may be given (issue 22, D254): pure, from the job's document.

A job *declares* its parameters when its ``parameters`` defaults or any schedule's
``parameters`` name at least one: then a trigger naming another one is refused (400 naming
``parameters.<name>``: a typo such as ``--param dya=monday`` would otherwise run with the default
silently). A job that declares none may still read ``CRONMESH_PARAM_<NAME>`` of whatever a
trigger passes, so there an unknown name is accepted with a warning in the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cluster.errors import InvalidInput


def declared(defaults: Mapping[str, str], schedules: Iterable[Mapping[str, str]]) -> set[str]:
    """The parameter names a job declares: its defaults' and its schedules'."""
    names = set(defaults)
    for params in schedules:
        names |= set(params)
    return names


def check_given(what: str, names: set[str], given: Mapping[str, str]) -> list[dict[str, str]]:
    """Warnings for a trigger's parameters; raises InvalidInput on an undeclared one when the job
    (or workflow: ``what`` names it, e.g. ``job hello``) declares any (the first, sorted, is named
    in ``field``)."""
    unknown = sorted(set(given) - names)
    if not unknown:
        return []
    if names:
        raise InvalidInput(
            f"{what} has no parameter {unknown[0]!r}; it declares: {', '.join(sorted(names))}",
            field=f"parameters.{unknown[0]}",
        )
    # the shape of the warnings a saved job carries (D223): one per name, naming its field
    return [
        {
            "field": f"parameters.{name}",
            "message": f"{what} declares no parameters; passed anyway as "
            f"CRONMESH_PARAM_{name.upper()}",
        }
        for name in unknown
    ]
