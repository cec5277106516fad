"""A real SMTP server for the notification tests: aiosmtpd with a handler that keeps every
mail it is given (and refuses any nobody@ recipient)."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    authenticated_as: bytes | None


class Inbox:
    """An aiosmtpd handler keeping what it is given; refuses any nobody@ recipient."""

    def __init__(self) -> None:
        self.mails: list[Delivered] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login if session.authenticated else None
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), message, login))
        return "250 2.0.0 queued"
