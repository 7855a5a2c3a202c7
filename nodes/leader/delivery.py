"""Sending one notification: a webhook POST, only to addresses the guard allows (D170), signed
when its rule has a secret, reading a bounded answer within the hook's timeout (D171); or a mail
through the node's SMTP server. Each is retried with backoff as its rule says, logged and counted,
and never raises. At most ``MAX_IN_FLIGHT`` are sent at once. The notifier
(``nodes.leader.notifier``) decides what to send; this sends it."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import structlog

from cluster.links import with_links
from cluster.netguard import Refused, check_secret_env
from cluster.notify import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Email,
    NotificationRule,
    Webhook,
    backoff,
    sign,
    webhook_body,
)
from nodes import metrics, webhooks
from nodes.leader.mailer import EMAIL_RETRIES, SmtpSettings, message

log = structlog.get_logger("nodes.leader.notifier")

MAX_IN_FLIGHT = 64


class Sender:
    """The notifier's deliveries: open (``open``) while the notifier runs."""

    def __init__(self, node: webhooks.Node) -> None:
        self.config = node.config
        self.smtp = SmtpSettings.from_url(node.config.smtp_url) if node.config.smtp_url else None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._http: aiohttp.ClientSession | None = None
        self._guard = webhooks.GuardSource(node)

    def open(self) -> None:
        """The HTTP session webhooks go through (its connections only reach what the guard
        allows)."""
        self._http = webhooks.guarded_session(self._guard.current)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    @property
    def ready(self) -> bool:
        """Deliveries can go (the HTTP session is open)."""
        return self._http is not None

    async def deliver(
        self, rule: NotificationRule, event: str, run: dict[str, Any], delivery: str
    ) -> None:
        """Send ``run`` (a run or slot document) for ``event`` as ``rule`` says; returns once it
        is sent or given up."""
        run = with_links(self.config.public_url, run)  # to the UI, for any event (D256)
        async with self._slots:
            hook, mail = rule.webhook, rule.email
            if hook is not None:
                await self._retrying(
                    "webhook",
                    hook.retries,
                    delivery,
                    event,
                    lambda: self._post(hook, event, run, delivery),
                )
            elif mail is not None:
                await self._retrying(
                    "email", EMAIL_RETRIES, delivery, event, lambda: self._mail(mail, event, run)
                )

    async def _retrying(
        self, channel: str, retries: int, delivery: str, event: str, send: Any
    ) -> None:
        for attempt in range(1, retries + 2):
            try:
                await send()
            except Refused as exc:  # a destination the guard refuses stays refused: no retries
                log.warning(
                    "notification refused",
                    channel=channel,
                    delivery=delivery,
                    notify_event=event,
                    error=str(exc),
                )
                metrics.NOTIFICATIONS.labels(channel, "refused").inc()
                return
            except Exception as exc:
                log.warning(
                    "notification failed",
                    channel=channel,
                    delivery=delivery,
                    notify_event=event,
                    attempt=attempt,
                    error=str(exc) or repr(exc),
                )
                if attempt > retries:
                    metrics.NOTIFICATIONS.labels(channel, "failed").inc()
                    return
                await asyncio.sleep(backoff(attempt))
            else:
                metrics.NOTIFICATIONS.labels(channel, "sent").inc()
                log.info(
                    "notification sent", channel=channel, delivery=delivery, notify_event=event
                )
                return

    async def _post(self, hook: Webhook, event: str, run: dict[str, Any], delivery: str) -> None:
        """One attempt: only to checked addresses (D170), reading at most a few hundred bytes of
        the answer within the hook's timeout (D171)."""
        assert self._http is not None
        body = webhook_body(hook, event, run, delivery)
        stamp = str(int(time.time()))
        headers = {
            **webhooks.safe_headers(hook.headers),
            "Content-Type": "application/json",
            "User-Agent": "cronmesh-notifier",
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery,
            TIMESTAMP_HEADER: stamp,
        }
        secret = hook.secret
        if hook.secret_env:
            check_secret_env(hook.secret_env)  # stored before the write check existed
            secret = os.environ.get(hook.secret_env)
            if not secret:
                raise RuntimeError(f"environment variable {hook.secret_env} is not set")
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, stamp, body)
        guard = await self._guard.refresh()
        await webhooks.post(self._http, guard, hook.url, body, headers, hook.timeout)

    async def _mail(self, email: Email, event: str, run: dict[str, Any]) -> None:
        if self.smtp is None:
            raise RuntimeError("no SMTP server configured (smtp_url / CRONMESH_SMTP_URL)")
        msg = message(self.smtp.sender, email, event, run)
        await asyncio.to_thread(self.smtp.send, msg)
