"""`notification`: a mail through an smtp channel (`to`, `subject`, `text` / `html`) or a message
through an http channel (`message`, filled into the channel's body).  An outbound effect: its
job is committed as soon as it is delivered, so a resumed execution does not notify twice.

The Message-ID is made of the execution id and the node key, so the rare second send (a crash
between delivery and commit) carries the same id and mail clients show one message.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, getaddresses, parseaddr
from typing import Any, Mapping

from ..channels import HttpChannel, SmtpChannel
from ..templates import compile_value, stringify

NAME = "notification"
FIELDS = ("channel", "to", "subject", "text", "html", "message")
AT_ONCE = True
SMTP_FIELDS = ("to", "subject", "text", "html")
HTTP_FIELDS = ("message",)


def prepare(fields: Mapping[str, Any], path: str, report, known) -> dict:
    name = fields.get("channel")
    channel = known.channels.get(name) if isinstance(name, str) else None
    if channel is None:
        declared = ", ".join(sorted(known.channels)) or "none"
        report(f"{path}.channel", f"names no channel declared in [channels] ({declared}), not {name!r}")
        return {"channel": None}
    wanted, others = (SMTP_FIELDS, HTTP_FIELDS) if isinstance(channel, SmtpChannel) else (HTTP_FIELDS, SMTP_FIELDS)
    for key in others:
        if key in fields:
            report(f"{path}.{key}", f"is not a setting for {channel.type} channel {name!r} (it takes {', '.join(wanted)})")
    for key in wanted:
        value = fields.get(key)
        if value is not None and not isinstance(value, str) and not (key == "to" and _string_list(value)):
            report(f"{path}.{key}", "must be a string or a list of strings" if key == "to" else "must be a string")
    if isinstance(channel, SmtpChannel):
        if not fields.get("to"):
            report(f"{path}.to", "a mail needs a recipient: a string or a list of addresses")
        if not fields.get("text") and not fields.get("html"):
            report(path, "a mail needs text, html or both")
    elif "message" not in fields:
        report(f"{path}.message", "an http channel's notification needs a message")
    return {"channel": channel, **{key: compile_value(fields.get(key)) for key in wanted}}


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


async def run(prepared: dict, run) -> dict:
    channel = prepared["channel"]
    if isinstance(channel, HttpChannel):
        message = stringify(run.render(prepared["message"]))
        status = await channel.deliver(run.resources.http, message)
        run.log(f"{channel.type} channel {channel.name!r}: {channel.host} answered {status}")
        return {"channel": channel.name, "status": status}
    recipients = _recipients(run.render(prepared["to"]))
    mail = compose(channel, recipients, run, **{key: run.render(prepared[key]) for key in ("subject", "text", "html")})
    refused = await channel.send(mail)
    taken = len(recipients) - len(refused)
    run.log(f"smtp channel {channel.name!r}: {channel.host}:{channel.port} took the mail for "
            f"{taken} of {len(recipients)} recipients", *([refused] if refused else []))
    result = {"channel": channel.name, "to": recipients, "message_id": mail["Message-ID"]}
    if refused:
        result["refused"] = refused
    return result


def _recipients(value: Any) -> list[str]:
    """Addresses from a rendered `to`: a list, or a string holding one or several
    ("a@x.org, Bea <b@y.org>")."""
    items = value if isinstance(value, list) else [value]
    flat = [inner for item in items for inner in (item if isinstance(item, list) else [item])]
    texts = [stringify(item) for item in flat if item not in (None, "")]
    found = getaddresses(texts)
    addresses = [address for _, address in found if address]
    malformed = [address for address in addresses if "@" not in address]
    if malformed or not addresses:
        shown = ", ".join(malformed) if malformed else repr(value)
        raise ValueError(f"to: not a mail address: {shown}")
    return addresses


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
