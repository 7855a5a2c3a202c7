"""A document already validated is not validated again when another one embeds it (D422).

pydantic runs a model's after-validators again when an instance of it is passed as a field of
another model, even with ``revalidate_instances="never"``. A run embeds its job's spec snapshot
(``Run.snapshot``), and ``JobSpec``'s after-validator encodes the whole document to check its
size (``MAX_JOB_BYTES``): once more for every run built, for a document that was checked when it
was made. :func:`as_validated` passes an instance of exactly ``cls`` through unchanged; anything
else (a dict, JSON, a subclass) is validated as before.

Every ``JobSpec`` instance the code builds was validated, or is a ``Job``'s spec
(``Job.spec``: its fields are a subset of a ``Job`` that passed the same checks, so its
document is no larger), and snapshots are never edited in place (``cluster.memo``).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidatorFunctionWrapHandler, WrapValidator


def as_validated(cls: type) -> WrapValidator:
    def keep(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return value if type(value) is cls else handler(value)

    return WrapValidator(keep)
