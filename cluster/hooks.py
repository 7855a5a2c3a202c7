"""Named hooks: what a project lets the outside world trigger (issue 24 item 2), as pure values
and decisions — the hook document, the mapping from a JSON payload to run parameters, and the
signature scheme. Storage is ``cluster/hook_store.py``; the HTTP side ``nodes/api/hooks.py``.

A delivery is signed as GitHub and Stripe sign theirs: ``X-Cronmesh-Signature: t=<unix
seconds>,v1=<hex>``, where ``v1`` is HMAC-SHA256 under the hook's secret of ``<t>.<body>``. The
timestamp is signed, so an old delivery cannot be replayed outside the window (``MAX_SKEW``), and
within it the ``Idempotency-Key`` makes a repeat return the first run instead of starting one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.errors import InvalidInput, Unauthenticated
from cluster.fields import NAME_PATTERN, PARAM_PATTERN, SubFieldError

SIGNATURE_HEADER = "X-Cronmesh-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_SKEW = 300  # seconds a signed timestamp may be off this node's clock, either way
MAX_BODY = 1024 * 1024  # the most any hook takes (the API's client_max_size)
DEFAULT_BODY = 256 * 1024
MAX_HOOKS_PER_PROJECT = 200
MAX_MAPPED = 64  # parameters one hook maps (a run's own cap on parameters)
MAX_PATH_SEGMENTS = 16
MAX_PARAM_VALUE = 4096  # characters of one parameter value (cluster.fields.Params)
MAX_VALUE_DEPTH = 32  # nesting of an object or list mapped to one parameter (D284)
MAX_IDEMPOTENCY_KEY = 255
MAX_SIGNATURES = 4  # v1 entries in one header (a sender rotating its secret sends two)
IDEMPOTENCY_WINDOW = 24 * 3600  # seconds a delivery's key is remembered (at least)
MAX_IDEMPOTENCY_KEYS = 10_000  # remembered keys per hook
SECRET_MIN = 16
SECRET_MAX = 256
# the AES-GCM associated data binds a sealed hook secret to its project and hook: a secret named
# "hook:x" cannot exist (names have no colon), so no project secret can be opened as one (D268)
SEALED_PREFIX = "hook:"

_SEGMENT = r"[A-Za-z0-9_\-]{1,64}"
PATH_RE = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT}){{0,{MAX_PATH_SEGMENTS - 1}}}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(NAME_PATTERN)

Auth = Literal["signature", "token"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class HookTarget(_Strict):
    """Exactly one job or workflow of the hook's project."""

    job: str | None = Field(default=None, pattern=NAME_PATTERN)
    workflow: str | None = Field(default=None, pattern=NAME_PATTERN)

    @model_validator(mode="after")
    def _one(self) -> HookTarget:
        if (self.job is None) == (self.workflow is None):
            raise ValueError("give exactly one of 'job' or 'workflow'")
        return self

    @property
    def kind(self) -> Literal["job", "workflow"]:
        return "job" if self.job is not None else "workflow"

    @property
    def name(self) -> str:
        return self.job if self.job is not None else self.workflow or ""


class HookSpec(_Strict):
    """What an editor writes (``secret`` is write-only: never stored in clear, never answered)."""

    name: str = Field(pattern=NAME_PATTERN)
    target: HookTarget
    parameters: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_MAPPED,
        description="run parameter -> dotted path into the JSON payload (a.b.0.c)",
    )
    auth: Auth = Field(
        default="signature",
        description="signature: X-Cronmesh-Signature (HMAC-SHA256); token: Authorization: "
        "Bearer <secret>",
    )
    rate_per_minute: int = Field(default=60, ge=1, le=6000)
    burst: int = Field(default=10, ge=1, le=1000)
    max_body_bytes: int = Field(default=DEFAULT_BODY, ge=1, le=MAX_BODY)
    enabled: bool = True
    description: str = Field(default="", max_length=512)
    secret: str | None = Field(default=None, min_length=SECRET_MIN, max_length=SECRET_MAX)

    @field_validator("parameters")
    @classmethod
    def _mapping(cls, value: dict[str, str]) -> dict[str, str]:
        for param, path in value.items():
            check_mapping(param, path)
        return value

    @field_validator("secret")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not (value.isascii() and value.isprintable()):
            raise ValueError("a hook secret is printable ASCII (it may travel as a header)")
        return value


class HookRecord(_Strict):
    """What is stored: the spec without its secret, the sealed secret, and who set it when."""

    name: str
    project: str
    target: HookTarget
    parameters: dict[str, str]
    auth: Auth
    rate_per_minute: int
    burst: int
    max_body_bytes: int
    enabled: bool
    description: str
    key_id: str
    nonce: str  # base64
    ciphertext: str  # base64, GCM tag included
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None

    def public(self) -> dict[str, Any]:
        """The face of a hook in answers: everything but the sealed secret."""
        data = self.model_dump(mode="json", exclude={"nonce", "ciphertext"})
        data["url"] = f"/api/v1/hooks/{self.project}/{self.name}"
        return data


def check_mapping(param: str, path: str) -> None:
    """One entry of a hook's ``parameters``; the error names ``parameters.<param>``."""
    if not isinstance(param, str) or not PARAM_PATTERN.match(param):
        raise SubFieldError(
            f"{param!r} is not a parameter name ([A-Za-z_][A-Za-z0-9_]*, max 64)", str(param)[:64]
        )
    if not isinstance(path, str) or len(path) > 512 or not PATH_RE.fullmatch(path):
        raise SubFieldError(
            f"{path!r} is not a dotted path into the payload (segments of [A-Za-z0-9_-], at "
            f"most {MAX_PATH_SEGMENTS}, e.g. 'repository.name' or 'commits.0.id')",
            param,
        )


_MISSING = object()


def lookup(payload: Any, path: str) -> Any:
    """The value at a dotted path (keys of objects, indexes of lists); ``_MISSING`` if absent.
    Bounded: at most ``MAX_PATH_SEGMENTS`` steps, each a dict or list lookup."""
    node = payload
    for segment in path.split(".")[:MAX_PATH_SEGMENTS]:
        if isinstance(node, dict):
            if segment not in node:
                return _MISSING
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and len(segment) <= 9:
            index = int(segment)
            if index >= len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def as_parameter(value: Any) -> str | None:
    """A payload value as a run parameter: strings as they are, true/false, numbers as JSON
    writes them, objects and lists as compact JSON; null: not set."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def map_parameters(mapping: dict[str, str], payload: Any) -> dict[str, str]:
    """The run parameters a payload gives through a hook's mapping. A path the payload lacks
    (or holds null) sets nothing, so the job's default applies; a value over the size of one
    parameter is refused naming it."""
    out: dict[str, str] = {}
    for param, path in mapping.items():
        found = lookup(payload, path)
        if found is _MISSING:
            continue
        if _deeper_than(found, MAX_VALUE_DEPTH):
            # json.dumps recurses: a list nested ~900 deep (json.loads takes it) raised
            # RecursionError, a 500, from a signed sender's payload (D284)
            raise InvalidInput(
                f"payload.{path}: nested more than {MAX_VALUE_DEPTH} deep for parameter {param}",
                field=f"payload.{path}",
            )
        value = as_parameter(found)
        if value is None:
            continue
        if len(value) > MAX_PARAM_VALUE:
            raise InvalidInput(
                f"payload.{path}: {len(value)} characters for parameter {param}; at most "
                f"{MAX_PARAM_VALUE}",
                field=f"payload.{path}",
            )
        if "\0" in value:
            raise InvalidInput(
                f"payload.{path}: parameter {param} cannot hold a NUL byte",
                field=f"payload.{path}",
            )
        out[param] = value
    return out


def _deeper_than(value: Any, limit: int) -> bool:
    """Does ``value`` nest objects or lists more than ``limit`` deep? Iterative (no recursion),
    stops at the first too-deep branch; O(size of value), which the body size bounds."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# -- signatures --------------------------------------------------------------------------------


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The header value a sender puts in ``X-Cronmesh-Signature``."""
    return f"t={timestamp},v1={_mac(secret, str(timestamp), body)}"


def _mac(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_signature(header: str) -> tuple[int, list[str]]:
    """``t=<unix>,v1=<hex>[,v1=<hex>…]`` → (timestamp, signatures). A malformed header is a
    400 naming it: whether it is well formed does not depend on the hook, so it tells nothing
    about which hooks exist."""
    field = SIGNATURE_HEADER
    if len(header) > 1024:
        raise InvalidInput(f"{field} is too long", field=field)
    timestamp: int | None = None
    sigs: list[str] = []
    for part in header.split(",")[: MAX_SIGNATURES + 4]:
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidInput(f"{field} must read 't=<unix seconds>,v1=<hex>'", field=field)
        if name == "t":
            if not (value.isascii() and value.isdigit() and len(value) <= 12):
                raise InvalidInput(f"{field}: t must be unix seconds", field=field)
            timestamp = int(value)
        elif name == "v1":
            if not _HEX64.fullmatch(value):
                raise InvalidInput(f"{field}: v1 must be 64 lowercase hex digits", field=field)
            sigs.append(value)
        # other schemes (v0, future versions) are ignored, as Stripe's receivers do
    if timestamp is None:
        raise InvalidInput(f"{field} has no t=<unix seconds>", field=field)
    if not sigs:
        raise InvalidInput(f"{field} has no v1=<hex> signature", field=field)
    return timestamp, sigs[:MAX_SIGNATURES]


def check_fresh(timestamp: int, now: float) -> None:
    """A signed timestamp more than ``MAX_SKEW`` seconds from ``now`` is refused (401, naming
    it): an old delivery captured on the way cannot be sent again later."""
    skew = now - timestamp
    if abs(skew) > MAX_SKEW:
        side = "old" if skew > 0 else "in the future"
        raise Unauthenticated(
            f"{SIGNATURE_HEADER}: timestamp t={timestamp} is {abs(int(skew))} s {side}; at most "
            f"{MAX_SKEW} s either way (check the sender's clock; sign each delivery anew)",
            field=f"{SIGNATURE_HEADER}.t",
        )


def signature_matches(secret: bytes, timestamp: int, body: bytes, sigs: list[str]) -> bool:
    """Constant time in the secret and the signatures (``hmac.compare_digest``); every given
    signature is compared, so the time does not tell which one matched."""
    want = _mac(secret, str(timestamp), body).encode()
    hit = False
    for sig in sigs:
        hit |= hmac.compare_digest(want, sig.encode())
    return hit


def token_matches(secret: bytes, sent: str) -> bool:
    """A bearer token against the hook's secret, in constant time (of equal-length digests)."""
    given = hashlib.sha256(sent.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(given, hashlib.sha256(secret).digest())


def idempotency_digest(key: str) -> str:
    """The etcd key part of an ``Idempotency-Key``: any printable header value, fixed size."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not (key.isascii() and key.isprintable()):
        raise InvalidInput(
            f"{IDEMPOTENCY_HEADER}: 1..{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            field=IDEMPOTENCY_HEADER,
        )
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))
