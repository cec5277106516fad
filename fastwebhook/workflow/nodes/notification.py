"""`notification`: a mail through an smtp channel (`to`, `subject`, `text` / `html`) or a message
through an http channel (`message`, filled into the channel's body).  An outbound effect: its
job is committed as soon as it is delivered, so a resumed execution does not notify twice.

The Message-ID is made of the execution id and the node key, so the rare second send (a crash
between delivery and commit) carries the same id and mail clients show one message.

Recipients: what the config writes may list several addresses in one string ("a@x, Bea
<b@y>"); what a template gives is data a webhook sender may control, so a string from a
template is one address (or the node fails), and only a list the data gives is several.  No
address may hold a line break, and the recipients together are at most `max_recipients`.
The mail goes to exactly these addresses (the SMTP envelope is set, not read from headers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any, Mapping

from ..channels import HttpChannel, SmtpChannel
from ..templates import Template, compile_value, stringify

NAME = "notification"
FIELDS = ("channel", "to", "subject", "text", "html", "message", "max_recipients")
AT_ONCE = True
SMTP_FIELDS = ("to", "subject", "text", "html", "max_recipients")
HTTP_FIELDS = ("message",)
MAX_RECIPIENTS = 10       # a notification goes to a few people; a mailing list is another tool
RECIPIENTS_CEILING = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS = re.compile(r'[^\s@<>()\[\],;:"\\]+@[^\s@<>()\[\],;:"\\]+')


@dataclass(frozen=True, slots=True)
class NotificationNode:
    channel: Any                     # SmtpChannel | HttpChannel (None after a reported error)
    message: Any = None              # http: the compiled message
    to: list = field(default_factory=list)   # smtp: strings and compiled templates
    max_recipients: int = MAX_RECIPIENTS
    subject: Any = None
    text: Any = None
    html: Any = None


def prepare(fields: Mapping[str, Any], path: str, report, known) -> NotificationNode:
    name = fields.get("channel")
    channel = known.channels.get(name) if isinstance(name, str) else None
    if channel is None:
        declared = ", ".join(sorted(known.channels)) or "none"
        report(f"{path}.channel", f"names no channel declared in [channels] ({declared}), not {name!r}")
        return NotificationNode(None)
    wanted, others = (SMTP_FIELDS, HTTP_FIELDS) if isinstance(channel, SmtpChannel) else (HTTP_FIELDS, SMTP_FIELDS)
    for key in others:
        if key in fields:
            report(f"{path}.{key}", f"is not a setting for {channel.type} channel {name!r} (it takes {', '.join(wanted)})")
    for key in (key for key in wanted if key != "max_recipients"):
        value = fields.get(key)
        if value is not None and not isinstance(value, str) and not (key == "to" and _string_list(value)):
            report(f"{path}.{key}", "must be a string or a list of strings" if key == "to" else "must be a string")
    if not isinstance(channel, SmtpChannel):
        if "message" not in fields:
            report(f"{path}.message", "an http channel's notification needs a message")
        return NotificationNode(channel, message=compile_value(fields.get("message")))
    if not fields.get("to"):
        report(f"{path}.to", "a mail needs a recipient: a string or a list of addresses")
    if not fields.get("text") and not fields.get("html"):
        report(path, "a mail needs text, html or both")
    limit = fields.get("max_recipients", MAX_RECIPIENTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= RECIPIENTS_CEILING:
        report(f"{path}.max_recipients", f"must be a whole number from 1 to {RECIPIENTS_CEILING}, not {limit!r}")
        limit = MAX_RECIPIENTS
    to = fields.get("to")
    to = [compile_value(item) for item in (to if isinstance(to, list) else [to]) if isinstance(item, str)]
    written = [item for item in to if not isinstance(item, Template)]
    try:   # the config's own addresses are checked now, the templates' when they are rendered
        if written:
            _recipients(written, None, limit)
    except ValueError as exc:
        report(f"{path}.to", str(exc).removeprefix("to: "))
    return NotificationNode(channel, to=to, max_recipients=limit, subject=compile_value(fields.get("subject")),
                            text=compile_value(fields.get("text")), html=compile_value(fields.get("html")))


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


async def execute(prepared: NotificationNode, run) -> dict:
    channel = prepared.channel
    if isinstance(channel, HttpChannel):
        message = stringify(run.render(prepared.message))
        status = await channel.deliver(run.resources.http, message)
        run.log(f"{channel.type} channel {channel.name!r}: {channel.host} answered {status}")
        return {"channel": channel.name, "status": status}
    recipients = _recipients(prepared.to, run, prepared.max_recipients)
    mail = compose(channel, recipients, run, subject=run.render(prepared.subject), text=run.render(prepared.text),
                   html=run.render(prepared.html))
    refused = await channel.send(mail, recipients)
    taken = len(recipients) - len(refused)
    run.log(f"smtp channel {channel.name!r}: {channel.host}:{channel.port} took the mail for "
            f"{taken} of {len(recipients)} recipients", *([refused] if refused else []))
    result = {"channel": channel.name, "to": recipients, "message_id": mail["Message-ID"]}
    if refused:
        result["refused"] = refused
    return result


def _recipients(to: list, run, limit: int) -> list[str]:
    """The addresses to mail: a written string may hold several, a templated one is one
    address (a list it renders to, one address per item)."""
    addresses: list[str] = []
    rendered = []
    for item in to:
        if not isinstance(item, Template):
            addresses += _addresses(item, several=True)
            continue
        value = run.render(item)
        rendered.append(value)
        for each in value if isinstance(value, list) else [value]:
            if each not in (None, ""):
                addresses += _addresses(stringify(each), several=False)
    if not addresses:
        raise ValueError(f"to: not a mail address: {_shown(rendered[0] if len(rendered) == 1 else rendered)}")
    if len(addresses) > limit:
        raise ValueError(f"to: {len(addresses)} recipients, over max_recipients = {limit}")
    return addresses


def _addresses(text: str, several: bool) -> list[str]:
    if _CONTROL.search(text):   # a CR/LF would start a header of its own (a Bcc: ...)
        raise ValueError(f"to: a mail address may not hold a line break or control character: {_shown(text)}")
    found = [address for _, address in getaddresses([text])]
    if not several and len(found) > 1:
        raise ValueError(f"to: {_shown(text)} holds {len(found)} addresses; a templated recipient is one "
                         "address (for several, the data gives a list)")
    if not found or not all(_ADDRESS.fullmatch(address) for address in found):
        raise ValueError(f"to: not a mail address: {_shown(text)}")
    return found


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def compose(channel: SmtpChannel, recipients: list[str], run, *, subject: Any, text: Any, html: Any) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = channel.sender
    mail["To"] = ", ".join(recipients)
    # A subject taken from webhook data may hold line breaks, which a header may not.
    mail["Subject"] = " ".join(stringify(subject).splitlines())
    mail["Date"] = formatdate(usegmt=True)
    domain = parseaddr(channel.sender)[1].rpartition("@")[2] or "fastwebhook.invalid"
    mail["Message-ID"] = f"<{run.id_text}.{run.node_key}@{domain}>"
    text, html = stringify(text), stringify(html)
    if text:
        mail.set_content(text)
        if html:
            mail.add_alternative(html, subtype="html")
    else:
        mail.set_content(html, subtype="html")
    return mail
