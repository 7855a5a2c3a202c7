"""E-mail notifications: the SMTP server's settings (``smtp_url``) and the message a finished run
or a slot event sends. Sending blocks: the notifier calls :meth:`SmtpSettings.send` in a thread."""

from __future__ import annotations

import smtplib
import ssl
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from cluster.errors import InvalidInput
from cluster.notify import Email, headline, link_lines

EMAIL_RETRIES = 5


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    tls: str = "none"  # none | starttls | ssl
    timeout: float = 10.0

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        """``smtp://[user:pass@]host[:port]?from=ADDR[&starttls=1]`` or ``smtps://…``."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise InvalidInput(
                "smtp_url must look like smtp://host:port?from=addr", field="smtp_url"
            )
        query = urllib.parse.parse_qs(parts.query)
        sender = (query.get("from") or [""])[0]
        if "@" not in sender:
            raise InvalidInput("smtp_url needs ?from=ADDRESS", field="smtp_url")
        tls = "ssl" if parts.scheme == "smtps" else "none"
        if (query.get("starttls") or ["0"])[0] in ("1", "true", "yes"):
            tls = "starttls"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls == "ssl" else 25),
            sender=sender,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def send(self, message: EmailMessage) -> None:
        """Blocking: call in a thread."""
        smtp: smtplib.SMTP
        if self.tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


def message(sender: str, email: Email, event: str, run: dict[str, Any]) -> EmailMessage:
    """The mail ``event`` about ``run`` (its document, with links: D256) sends to ``email``."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(email.to)
    msg["Subject"] = f"[cronmesh] {run['project']}/{run['job']}: {event}"
    links = [f"{label}: {url}" for label, url in link_lines(run)]  # D256
    lines = [headline(event, run), "", *links, *([""] if links else [])]
    for k in ("status", "attempt", "node", "scheduled_at", "started_at", "finished_at"):
        lines.append(f"{k}: {run.get(k)}")
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    msg.set_content("\n".join(lines) + "\n")
    return msg
