"""Notifications: what a job (or a project, as defaults) asks to be told, and the pure decisions
about which events a finished run raises and what the messages look like.

Delivery (webhooks over HTTP, e-mail over SMTP) lives in ``nodes/leader/notifier.py``; everything
here is free of I/O and tested with plain values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.errors import InvalidInput

NotifyEvent = Literal[
    "failure",
    "timeout",
    "lost",
    "success",
    "recovery",
    # slot events (D232): a slot skipped, late, past a deadline, and the first good slot after
    "skipped",
    "late",
    "deadline_missed",
    "recovered",
]
DEFAULT_EVENTS: tuple[NotifyEvent, ...] = ("failure", "timeout", "lost")
# Final statuses that say "something is wrong" (a later success is then a recovery).
BAD = frozenset({"failed", "timed_out", "lost"})
_EVENT_OF_STATUS: dict[str, NotifyEvent] = {
    "failed": "failure",
    "timed_out": "timeout",
    "lost": "lost",
    "succeeded": "success",
    "skipped": "skipped",
}
SIGNATURE_HEADER = "X-Cronmesh-Signature"
TIMESTAMP_HEADER = "X-Cronmesh-Timestamp"
DELIVERY_HEADER = "X-Cronmesh-Delivery"
EVENT_HEADER = "X-Cronmesh-Event"
# What answers show instead of a stored webhook secret; sent back (or left out) it keeps it (D172).
SECRET_KEPT = "********"
REDACTED = "(redacted)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Webhook(_Strict):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    # HMAC-SHA256 key: the receiver checks X-Cronmesh-Signature (see docs/operations.md).
    secret: str | None = Field(default=None, min_length=1, max_length=256)
    # …or the name of an environment variable of the nodes that holds the key (kept out of etcd).
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    retries: int = Field(default=5, ge=0, le=20)
    timeout: float = Field(default=10, gt=0, le=120)

    @model_validator(mode="after")
    def _one_secret(self) -> Webhook:
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("give 'secret' or 'secret_env', not both")
        return self


class Email(_Strict):
    to: list[str] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _addresses(self) -> Email:
        for addr in self.to:
            local, at, domain = addr.partition("@")
            if not at or not local or "." not in domain or any(c.isspace() for c in addr):
                raise ValueError(f"{addr!r} is not an e-mail address")
        return self


class NotificationRule(_Strict):
    """One rule: on these events, send to this webhook or these mail boxes."""

    on: list[NotifyEvent] = Field(default_factory=lambda: list(DEFAULT_EVENTS), min_length=1)
    # "change": a run's failure/timeout/loss only when the job's run before it did not fail, a
    # success only after a failed one (issue 24 item 4, D259); "always": every time
    when: Literal["always", "change"] = "always"
    webhook: Webhook | None = None
    email: Email | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml11_on(cls, data: Any) -> Any:
        """YAML 1.1 loaders read the key ``on`` as the boolean true; take it back."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _one_channel(self) -> NotificationRule:
        if (self.webhook is None) == (self.email is None):
            raise ValueError("a notification rule needs exactly one of 'webhook' or 'email'")
        return self


class ProjectNotifications(_Strict):
    """Project defaults: apply to every job of the project that sets no ``notifications``."""

    rules: list[NotificationRule] = Field(default_factory=list, max_length=32)


def events_for(status: str, previous: str | None) -> list[NotifyEvent]:
    """The events a run that finished with ``status`` raises; ``previous`` is the final status of
    the job's run before it (None when unknown or none)."""
    event = _EVENT_OF_STATUS.get(status)
    if event is None:  # cancelled: a person did it; nobody is told
        return []
    if event == "success" and previous in BAD:
        return ["success", "recovery"]
    return [event]


def wants_previous(rules: list[NotificationRule]) -> bool:
    return any("recovery" in r.on for r in rules)


def needs_previous(rules: list[NotificationRule], status: str) -> bool:
    """Whether deciding for a run that ended ``status`` needs the job's previous outcome."""
    if any(r.when == "change" for r in rules):
        return status in _EVENT_OF_STATUS
    return status == "succeeded" and wants_previous(rules)


_RUN_BAD_EVENTS = frozenset({"failure", "timeout", "lost"})


def is_change(event: str, previous: str | None) -> bool:
    """For a ``when: change`` rule: a bad outcome after a good one (or after none: the job's
    first outcome), a success after a bad one. A recovery is a change by definition; events
    that are not a run's outcome (slot events) are not filtered."""
    if event in _RUN_BAD_EVENTS:
        return previous not in BAD
    if event == "success":
        return previous in BAD
    return True


def matching(
    rules: list[NotificationRule], events: list[NotifyEvent], previous: str | None = None
) -> list[tuple[str, int]]:
    """(event, rule index) pairs to deliver: each rule once per run, for its most specific event
    (a recovery is also a success; a rule that asks for both gets the recovery); a ``when:
    change`` rule only for an event that changes the job's state from ``previous``."""
    out: list[tuple[str, int]] = []
    for i, rule in enumerate(rules):
        hit = [
            e
            for e in reversed(events)
            if e in rule.on and (rule.when == "always" or is_change(e, previous))
        ]
        if hit:
            out.append((hit[0], i))
    return out


def delivery_id(run_id: str, attempt: int, event: str, rule: int) -> str:
    """Stable across retries and leader changes: receivers use it to drop duplicates."""
    return f"{run_id}-{attempt}-{event}-{rule}"


def payload(event: str, run: dict[str, Any], delivery: str) -> dict[str, Any]:
    keep = (
        "id",
        "project",
        "job",
        "status",
        "attempt",
        "node",
        "source",
        "scheduled_at",
        "started_at",
        "finished_at",
        "exit_code",
        "signal",
        "error",
    )
    return {
        "delivery": delivery,
        "event": event,
        "project": run["project"],
        "job": run["job"],
        "run": {k: run.get(k) for k in keep},
        **({"slot": run["slot"]} if "slot" in run else {}),
        "links": dict(run.get("links") or {}),  # UI pages, with a public URL set (D256)
    }


def headline(event: str, run: dict[str, Any]) -> str:
    what = {
        "failure": "failed",
        "timeout": "timed out",
        "lost": "was lost (its node stopped)",
        "success": "succeeded",
        "recovery": "recovered (succeeded after a failure)",
        "skipped": "skipped a slot",
        "late": "started late",
        "deadline_missed": "missed a deadline",
        "recovered": "is back on time (after a missed deadline)",
    }[event]
    detail = []
    if run.get("exit_code") is not None:
        detail.append(f"exit code {run['exit_code']}")
    if run.get("node"):
        detail.append(f"on {run['node']}")
    tail = f" ({', '.join(detail)})" if detail else ""
    slot = run.get("slot")
    if slot is not None:  # a slot event: its instant and reason (the run may not exist)
        why = f": {slot['reason']}" if slot.get("reason") else ""
        return f"cronmesh: job {run['project']}/{run['job']} {what}: slot {slot['tick']}{why}"
    return f"cronmesh: job {run['project']}/{run['job']} {what}: run {run['id']}{tail}"


def slack_body(event: str, run: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (also accepted by Mattermost and similar)."""
    icon = {"success": ":white_check_mark:", "recovery": ":white_check_mark:"}.get(event, ":x:")
    text = f"{icon} {headline(event, run)}"
    if run.get("error"):
        text += f"\n> {run['error']}"
    for name, url in link_lines(run):
        text += f"\n<{url}|{name}>"
    return {"text": text}


LINK_NAMES = {
    "run": "Open the run",
    "execution": "Open the workflow execution",
    "workflow": "Open the workflow",
}


def link_lines(run: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, URL) of the UI pages a message about ``run`` points to (D256): the run, and a
    workflow task's execution; none without a public URL."""
    links = run.get("links") or {}
    out = [(label, links[name]) for name, label in LINK_NAMES.items() if links.get(name)]
    if not out and links.get("job"):  # a message about a job, not one run (a slot)
        out.append(("Open the job", links["job"]))
    return out


def webhook_body(hook: Webhook, event: str, run: dict[str, Any], delivery: str) -> bytes:
    body = slack_body(event, run) if hook.format == "slack" else payload(event, run, delivery)
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``<timestamp>.<body>`` (the timestamp stops replays)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): 0.5, 1, 2, 4 … capped."""
    return float(min(cap, base * 2 ** (attempt - 1)))


# -- secrets are write-only, URLs and headers need editor (D172) ---------------------------------


def keep_secrets(
    new: list[NotificationRule] | None, old: list[NotificationRule] | None, base: str
) -> list[NotificationRule] | None:
    """``new`` with each webhook secret that was left out or sent as ``SECRET_KEPT`` taken from
    the stored rule with the same URL; ``null`` removes it. Sending ``SECRET_KEPT`` for a URL
    without a stored secret is refused (naming the field): the secret would silently be lost."""
    if not new:
        return new
    stored: dict[str, str] = {}
    for rule in old or []:
        if rule.webhook is not None and rule.webhook.secret and rule.webhook.url not in stored:
            stored[rule.webhook.url] = rule.webhook.secret
    out: list[NotificationRule] = []
    for i, rule in enumerate(new):
        hook = rule.webhook
        if hook is None:
            out.append(rule)
            continue
        given = "secret" in hook.model_fields_set
        if hook.secret == SECRET_KEPT or (not given and hook.secret_env is None):
            kept = stored.get(hook.url)
            if kept is None and hook.secret == SECRET_KEPT:
                raise InvalidInput(
                    f"{base}.{i}.webhook.secret: no secret is stored for this url to keep; "
                    "send the secret itself",
                    field=f"{base}.{i}.webhook.secret",
                )
            hook = hook.model_copy(update={"secret": kept})
            rule = rule.model_copy(update={"webhook": hook})
        out.append(rule)
    return out


def redact_url(url: str) -> str:
    """Scheme and host only: the path and query of a webhook URL are often its credential."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/{REDACTED}"


def redact_document(doc: Any, *, full: bool, depth: int = 0) -> Any:
    """Every webhook inside a JSON answer (jobs, runs' snapshots, project defaults…): its secret
    becomes ``SECRET_KEPT`` always; below editor (``full`` false) its URL keeps only scheme and
    host and its header values are hidden. Changes ``doc`` in place and returns it."""
    if depth > 64:
        return doc
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "webhook" and isinstance(value, dict) and "url" in value:
                _redact_hook(value, full)
            else:
                redact_document(value, full=full, depth=depth + 1)
    elif isinstance(doc, list):
        for item in doc:
            redact_document(item, full=full, depth=depth + 1)
    return doc


def _redact_hook(hook: dict[str, Any], full: bool) -> None:
    if hook.get("secret"):
        hook["secret"] = SECRET_KEPT
    if full:
        return
    if isinstance(hook.get("url"), str):
        hook["url"] = redact_url(hook["url"])
    headers = hook.get("headers")
    if isinstance(headers, dict):
        hook["headers"] = {k: REDACTED for k in headers}
