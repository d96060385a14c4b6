"""Test doubles for the Email Service: a scriptable MailSender and a tiny project."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from postline.assets.kinds.connection import EmailConnection
from postline.assets.kinds.service import EmailService as EmailServiceAsset
from postline.errors import ConfigError, ConnectError, DeliveryError
from postline.protocols.base import MailSender, RecipientStatus, SendResult


class FakeSender(MailSender):
    """Records every mail; ``script`` pops one behaviour per send: ok, 4xx, 5xx,
    drop-before (connection lost before the end of DATA), drop-after (after the dot),
    drop-after-said (the same, the message saying it is not retried)."""

    def __init__(self, *, script=None, smtputf8=True, max_size=None, delay=0.0, clock=None):
        self.script = list(script or [])
        self.sent: list[tuple] = []        # (envelope, raw, time)
        self.attempts = 0
        self._smtputf8 = smtputf8
        self._max_size = max_size
        self.delay = delay
        self.clock = clock
        self.connects = 0
        self.closes = 0
        self.concurrent = 0
        self.max_concurrent = 0

    async def connect(self):
        self.connects += 1

    async def close(self):
        self.closes += 1

    async def send(self, envelope, message, *, message_id=""):
        self.attempts += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            action = self.script.pop(0) if self.script else "ok"
            if action == "4xx":
                raise DeliveryError("451 4.3.0 try again later", code=451, retriable=True)
            if action == "5xx":
                raise DeliveryError("554 5.7.1 rejected: spam", code=554)
            if action == "drop-before":
                raise ConnectError("connection lost before the end of DATA")
            if action == "drop-after":
                raise DeliveryError("connection lost after the final dot", outcome="unknown")
            if action == "drop-after-said":     # the sender's message says it already
                raise DeliveryError("connection lost after the final dot; not retried",
                                    outcome="unknown", says_not_retried=True)
            self.sent.append((envelope, message, self.clock() if self.clock else 0.0))
            recips = [RecipientStatus(r, True, 250, "2.1.5 Ok") for r in envelope.recipients]
            return SendResult(message_id=message_id, accepted=list(envelope.recipients),
                              recipients=recips, server_reply="250 2.0.0 Ok: queued as FAKE")
        finally:
            self.concurrent -= 1

    @property
    def max_message_size(self):
        return self._max_size

    @property
    def supports_smtputf8(self):
        return self._smtputf8


@dataclass
class FakeProject:
    state_dir: Path
    assets: dict = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The project directory (the console's workspace watches its files)."""
        return self.state_dir.parent

    def entry(self, kind, name):
        return self.get(kind, name)

    def get(self, kind, name):
        try:
            return self.assets[(kind, name)]
        except KeyError:
            raise ConfigError(f"no {kind} named {name}") from None


def make_project(tmp_path: Path, **service_fields) -> FakeProject:
    conn = EmailConnection.model_validate({
        "kind": "EmailConnection", "name": "Out",
        "outgoing": {"protocol": "smtp", "host": "127.0.0.1", "port": 2525, "security": "none"}})
    fields = {"kind": "EmailService", "name": "Notify", "connection": "Out",
              "retry": {"max_attempts": 3, "min_backoff": 0.01, "max_backoff": 0.05}}
    fields.update(service_fields)
    svc = EmailServiceAsset.model_validate(fields)
    return FakeProject(state_dir=tmp_path / "state",
                       assets={("EmailConnection", "Out"): conn, ("EmailService", svc.name): svc})



MSG = {"From": "Reports <reports@example.test>", "To": [{"Address": "ann@example.test"}],
       "Subject": "Hello", "Body": "Hi Ann"}
