"""A real SMTP server in the test process (aiosmtpd, in its own thread) that keeps every message
it accepts, and refuses the recipients or messages a test tells it to."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from notifications.sender import Delivery, SmtpServer
from tests.billing.scenario import billing_catalog
from tests.notifications.webhook_receiver import Receiver, serve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: MimeMessage


@dataclass
class Mailbox:
    """What the server received, and how it answers: RCPT TO of an address in ``refuse`` gets its
    answer (e.g. ``550 no such user``); DATA gets ``data_answer`` when set."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    data_answer: str | None = None
    arrived: threading.Event = field(default_factory=threading.Event)  # set on each message accepted

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_answer:
            return self.data_answer
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        assert isinstance(parsed, MimeMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        self.arrived.set()
        return "250 Message accepted for delivery"


@dataclass
class SmtpFixture:
    mailbox: Mailbox
    port: int

    def delivery(self, **overrides: Any) -> Delivery:
        server = SmtpServer(host="127.0.0.1", port=self.port, tls="none", username=None, password=None)
        return Delivery(server=server, from_address="Billing <billing@tally.example>", **overrides)


@pytest.fixture
def smtp() -> Iterator[SmtpFixture]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpFixture(mailbox, port)
    finally:
        controller.stop()


__all__ = ["billing_catalog", "receiver", "smtp"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())
