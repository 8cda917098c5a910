"""Alerts: a failed run, a dead letter, a quarantine above its threshold, an SLA miss, a stale
source. Each goes to the pipeline's sinks (a webhook, a command, the log), once per pipeline,
kind and subject within the de-duplication window: the repeats in between are counted and the
next alert that goes out says how many there were.

A webhook gets the alert as JSON, retried three times (0.5 s, 1 s, 2 s apart) on a connection
error, a timeout, 429 or 5xx; a command gets it as JSON on stdin and in ARROWLINE_ALERT_* variables.
Delivery never raises: a sink that cannot be reached is logged. Secrets never reach an alert's
text (engine.core.secrets.redact).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from engine.core.secrets import redact
from engine.spec.model import AlertsSpec
from engine.state.catalog import Catalog

__all__ = ["Alert", "AlertSender"]


@dataclass(frozen=True)
class Alert:
    pipeline: str
    kind: str
    """failure, dead_letter, quarantine, sla, freshness or source."""
    subject: str
    """What it is about: a run id, a task, an interval; with kind and pipeline, the dedup key."""
    message: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, Any] = field(default_factory=dict)
    suppressed: int = 0
    """Alerts of the same key not sent since the last one that was."""

    @property
    def key(self) -> str:
        # unit separators, not NUL: PostgreSQL text cannot hold NUL
        return f"{self.pipeline}\x1f{self.kind}\x1f{self.subject}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        data["message"] = redact(self.message)
        return data


class AlertSender:
    def __init__(self, store: Catalog, *, retry_delays: tuple[float, ...] = (0.5, 1, 2)) -> None:
        self.store = store
        self.retry_delays = retry_delays
        self.sent: list[Alert] = []

    def send(self, alert: Alert, spec: AlertsSpec | None) -> bool:
        """Deliver `alert` unless its kind is off or it repeats one inside the window."""
        if spec is None or alert.kind not in spec.on:
            return False
        suppressed = self.store.alert_due(
            alert.key, alert.pipeline, alert.kind, alert.at, spec.dedup
        )
        if suppressed is None:
            return False
        alert = replace(alert, suppressed=suppressed)
        payload = alert.to_dict()
        if spec.log:
            repeats = f" ({suppressed} repeats suppressed)" if suppressed else ""
            logger.warning(
                "alert {} {}: {}{}", alert.kind, alert.pipeline, payload["message"], repeats
            )
        if spec.webhook:
            self._webhook(spec.webhook, payload)
        if spec.command:
            self._command(spec.command, payload)
        self.sent.append(alert)
        return True

    def _webhook(self, url: str, payload: dict[str, Any]) -> None:
        import httpx

        problem = ""
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                response = httpx.post(url, json=payload, timeout=5.0)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if delay is None:
                break
            logger.debug("alert webhook attempt {} failed ({}); retrying", attempt + 1, problem)
            time.sleep(delay)
        logger.error("alert webhook {} not delivered: {}", url, redact(problem))

    @staticmethod
    def _command(command: str, payload: dict[str, Any]) -> None:
        env = {
            **os.environ,
            **{
                f"ARROWLINE_ALERT_{k.upper()}": str(v) for k, v in payload.items() if k != "details"
            },
        }
        try:
            done = subprocess.run(
                command,
                shell=True,  # the user's own command line, from their pipeline file
                input=json.dumps(payload),
                text=True,
                env=env,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.error("alert command failed: {}", redact(str(exc)))
            return
        if done.returncode != 0:
            logger.error(
                "alert command exited {}: {}", done.returncode, redact(done.stderr.strip()[:500])
            )
