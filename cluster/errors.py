"""One exception root for cronmesh; the API maps these to HTTP answers in one place."""

from __future__ import annotations


class CronmeshError(Exception):
    """Root of every error cronmesh raises on purpose.

    ``code`` is a stable machine-readable name, ``status`` the HTTP status the API answers with,
    ``field`` the dotted path of the offending input field when there is one.
    """

    code = "error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "field": self.field}


class InvalidInput(CronmeshError, ValueError):
    """The request or document is malformed or violates a rule."""

    code = "invalid"
    status = 400


class InvalidSchedule(InvalidInput):
    """A cron expression, time zone, duration or one-shot time cannot be used."""

    code = "invalid_schedule"


class NotFound(CronmeshError, LookupError):
    code = "not_found"
    status = 404


class JobNotFound(NotFound):
    code = "job_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class Conflict(CronmeshError):
    """The request is valid but the current state forbids it (already exists, already finished)."""

    code = "conflict"
    status = 409


class Unavailable(CronmeshError):
    """etcd (or another node) cannot be reached right now; retrying later may succeed."""

    code = "unavailable"
    status = 503


class PeerRejected(Unavailable):
    """Another node refused this node's signed call (peer secret or clock out of step).

    The user's own rights were checked here already, so passing the peer's 401/403 on would blame
    the user for a fault between nodes: the API answers 502 and names the peer instead.
    """

    code = "peer_rejected"
    status = 502


class NotConnected(Unavailable):
    """This node holds no etcd session (not yet, or lost and reconnecting): the one answer of
    every route that needs etcd, the login included (D214)."""

    code = "not_connected"

    def __init__(self, message: str = "this node is not connected to etcd") -> None:
        super().__init__(message)


# -- etcd outcomes (raised by ``cluster.etcd``) -----------------------------------------------


class OutcomeUnknown(Unavailable):
    """A write was sent but its reply was lost: it may have been applied. Read back, then decide."""

    code = "outcome_unknown"


class Compacted(CronmeshError):
    """A watch asked for a revision that etcd has already compacted away; re-read and re-watch."""

    code = "compacted"

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted below {revision}")
        self.revision = revision


class LeaseGone(Unavailable):
    """A write bound to a lease was rejected because the lease no longer exists."""

    code = "lease_gone"


class Rejected(CronmeshError):
    """etcd refused a request that can never succeed as it is (too large, malformed)."""

    code = "rejected"
    status = 422


class AuthExpired(Unavailable):
    """The blocking lease client's token was refused: the asyncio client must renew it."""


class LostOwnership(CronmeshError):
    """A fenced write failed: this node no longer holds the lease, claim or leadership it used."""

    code = "lost_ownership"
    status = 409


class Unauthenticated(CronmeshError):
    """No valid credentials (missing, unknown, expired or revoked token; wrong password)."""

    code = "unauthenticated"
    status = 401


class Forbidden(CronmeshError):
    """Valid credentials without the role this request needs."""

    code = "forbidden"
    status = 403


class PasswordChangeRequired(Forbidden):
    """The account's password was generated (the first admin): it must be changed before use."""

    code = "password_change_required"


class TooManyRequests(CronmeshError):
    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class QuotaExceeded(CronmeshError):
    """A per-project cap (named in ``field``) would be passed; nothing was written. 403 with
    the code ``quota_exceeded``, like the quotas on jobs, workflows and bytes (D162, D173)."""

    code = "quota_exceeded"
    status = 403
