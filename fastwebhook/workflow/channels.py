"""`[channels]`: where notification nodes deliver, checked once at load into frozen dataclasses.

An smtp channel sends mail (implicit TLS or STARTTLS, optional AUTH); an http channel posts a
message to an incoming-webhook URL (Slack, DingTalk, WeCom, Feishu, an SMS gateway), filling
`{{message}}` in its body template.  Both know how to deliver; the notification node renders
what to deliver.  A Slack-style URL is itself a credential, so it is never put in a repr, a log
or an error (the host stands for it).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import aiohttp
import aiosmtplib
import orjson

from ..core.errors import FastwebhookError
from ..config.files import read_secret_file
from ..core.units import parse_duration
from .outbound import Denied, HttpClient, is_http_url, read_limited

SMTP_KEYS = {"type", "host", "port", "starttls", "tls", "username", "password", "password_file",
             "from", "timeout", "ca_file", "tls_verify"}
HTTP_KEYS = {"type", "url", "method", "headers", "body", "timeout"}
HTTP_METHODS = ("POST", "PUT", "PATCH", "GET")
DEFAULT_HTTP_BODY = '{"text": "{{message}}"}'   # Slack's (and Mattermost's, Rocket.Chat's) shape
DEFAULT_TIMEOUT = 10.0
ANSWER_LIMIT = 64 << 10     # a chat endpoint answers "ok" or a short error; more is not read
_MESSAGE = re.compile(r"\{\{\s*message\s*\}\}")


class ChannelError(FastwebhookError):
    """A delivery the channel's server refused or could not take; says which channel and why."""


@dataclass(frozen=True)
class SmtpChannel:
    name: str
    host: str
    port: int
    sender: str                       # the `from` setting, e.g. "Deploys <deploy@example.com>"
    starttls: bool = False
    tls: bool = False                 # implicit TLS from the first byte (port 465)
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = DEFAULT_TIMEOUT
    tls_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    type = "smtp"

    async def send(self, message: EmailMessage, recipients: list[str]) -> dict[str, str]:
        """Deliver to `recipients` (the envelope: never what the headers may say); returns the
        recipients the server refused (when it took the others)."""
        try:
            refused, _reply = await aiosmtplib.send(
                message, sender=parseaddr(self.sender)[1], recipients=recipients, hostname=self.host,
                port=self.port, use_tls=self.tls, start_tls=self.starttls, tls_context=self.tls_context,
                username=self.username or None, password=self.password or None, timeout=self.timeout)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise ChannelError(f"channel {self.name!r}: {self.host}:{self.port} refused every recipient ({replies})") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise ChannelError(f"channel {self.name!r}: {self.host}:{self.port} answered {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:   # connect, timeout, TLS handshake
            raise ChannelError(f"channel {self.name!r}: {self.host}:{self.port}: {exc or type(exc).__name__}") from None
        return {address: f"{reply.code} {reply.message}" for address, reply in refused.items()}


@dataclass(frozen=True)
class HttpChannel:
    name: str
    url: str = field(repr=False)
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    body: str | None = DEFAULT_HTTP_BODY
    json_body: bool = True            # fill {{message}} JSON-escaped, so quotes cannot break the body
    timeout: float = DEFAULT_TIMEOUT
    type = "http"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    def request_for(self, message: str) -> tuple[str, bytes | None]:
        """The URL and body with `message` filled in."""
        url = _MESSAGE.sub(lambda _: quote(message, safe=""), self.url)
        if self.body is None:
            return url, None
        filling = orjson.dumps(message).decode()[1:-1] if self.json_body else message
        return url, _MESSAGE.sub(lambda _: filling, self.body).encode()

    async def deliver(self, client: HttpClient, message: str) -> int:
        """Post the message; a redirect is not followed (the channel's headers are meant for its
        URL alone): it fails the delivery like any answer but a 2xx."""
        url, body = self.request_for(message)
        try:
            async with client.request(self.method, url, data=body, headers=dict(self.headers),
                                      timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                answer = await read_limited(response, ANSWER_LIMIT)
                status = response.status
        except TimeoutError:
            raise ChannelError(f"channel {self.name!r}: {self.host} did not answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise ChannelError(f"channel {self.name!r}: {self.host}: {exc or type(exc).__name__}") from None
        except Denied as exc:
            raise ChannelError(f"channel {self.name!r}: {exc}") from None
        text = answer.decode("utf-8", "replace")[:300]
        if not 200 <= status < 300:
            raise ChannelError(f"channel {self.name!r}: {self.host} answered {status}: {text}")
        refusal = _refusal_in(answer)
        if refusal:
            raise ChannelError(f"channel {self.name!r}: {self.host} answered {status} but refused the message: {refusal}")
        return status


Channel = SmtpChannel | HttpChannel


def _refusal_in(answer: bytes) -> str | None:
    """DingTalk and WeCom answer 200 with `errcode` != 0 when they drop a message, Feishu with
    `code` != 0: a failure all the same."""
    if not answer.startswith(b"{"):
        return None
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    for code, text in (("errcode", "errmsg"), ("code", "msg")):
        value = data.get(code)
        if isinstance(value, int) and not isinstance(value, bool) and value != 0 and \
                (code == "errcode" or "msg" in data) and not 200 <= value < 300:
            return f"{code} {value}: {data.get(text, '')}"
    return None


def load_channels(loader, table: Mapping[str, Any], path: str) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    for name, entry in table.items():
        where = f"{path}.{name}"
        if not isinstance(entry, dict):
            loader.error(where, "must be a table")
            continue
        kind = entry.get("type")
        if kind == "smtp":
            channel = _smtp(loader, name, entry, where)
        elif kind == "http":
            channel = _http(loader, name, entry, where)
        else:
            loader.error(f"{where}.type", f"must be \"smtp\" or \"http\", not {kind!r}")
            continue
        if channel is not None:
            channels[name] = channel
    return channels


def _smtp(loader, name: str, t: dict, where: str) -> SmtpChannel | None:
    loader.unknown_keys(t, SMTP_KEYS, where)
    host = loader.take(t, "host", where, str, "")
    if not host:
        loader.error(f"{where}.host", "an smtp channel needs a host")
    tls = _flag(loader, t, "tls", where, False)
    starttls = _flag(loader, t, "starttls", where, False)
    if tls and starttls:
        loader.error(f"{where}.starttls", "tls (implicit, port 465) and starttls (port 587) exclude each other: set one")
    port = _port(loader, t, where, 465 if tls else 587 if starttls else 25)
    sender = loader.take(t, "from", where, str, "")
    if "@" not in parseaddr(sender)[1]:
        loader.error(f"{where}.from", f"must be a mail address such as \"Deploys <deploy@example.com>\", not {sender!r}")
    username = loader.take(t, "username", where, str, "")
    password = loader.take(t, "password", where, str, "")
    if "password_file" in t:
        if password:
            loader.error(f"{where}.password_file", "give password or password_file, not both")
        password = read_secret_file(loader, loader.take(t, "password_file", where, str, ""), f"{where}.password_file")
    if bool(username) != bool(password):
        missing = "password" if username else "username"
        loader.error(f"{where}.{missing}", "AUTH needs both username and password (or neither)")
    timeout = _timeout(loader, t, where)
    tls_context = _tls_context(loader, t, where) if tls or starttls else None
    if not (tls or starttls):
        for key in ("ca_file", "tls_verify"):
            if key in t:
                loader.error(f"{where}.{key}", "only means something with tls or starttls")
    return SmtpChannel(name, host, port, sender, starttls, tls, username, password, timeout, tls_context)


def _tls_context(loader, t: dict, where: str) -> ssl.SSLContext:
    """The system's CAs, plus `ca_file` (a relative path is the config file's neighbour) for a
    private CA; `tls_verify = false` accepts any certificate (a lab relay, never the internet)."""
    context = ssl.create_default_context()
    ca_file = loader.take(t, "ca_file", where, str, "")
    if ca_file:
        location = Path(loader.path).parent / ca_file
        try:
            context.load_verify_locations(str(location))
        except (OSError, ssl.SSLError) as exc:
            loader.error(f"{where}.ca_file", f"cannot load CA certificates from {location}: {getattr(exc, 'strerror', None) or exc}")
    if not _flag(loader, t, "tls_verify", where, True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _http(loader, name: str, t: dict, where: str) -> HttpChannel | None:
    loader.unknown_keys(t, HTTP_KEYS, where)
    url = loader.take(t, "url", where, str, "")
    if not is_http_url(_MESSAGE.sub("x", url)):
        loader.error(f"{where}.url", "must be an http:// or https:// URL")
    method = loader.take(t, "method", where, str, "POST").upper()
    if method not in HTTP_METHODS:
        loader.error(f"{where}.method", f"must be one of {', '.join(HTTP_METHODS)}, not {method!r}")
    headers = loader.take(t, "headers", where, dict, {})
    for key, value in headers.items():
        if not isinstance(value, str):
            loader.error(f"{where}.headers.{key}", "must be a string")
    if method == "GET":
        if "body" in t:
            loader.error(f"{where}.body", "a GET sends no body: put {{message}} in the url")
        body = None
    else:
        body = loader.take(t, "body", where, str, DEFAULT_HTTP_BODY)
    for source, key in ((url, "url"), (body or "", "body")):
        if "{{" in _MESSAGE.sub("", source):
            loader.error(f"{where}.{key}", "only {{message}} is filled in a channel; other templates belong in the node's message")
    named = {k.lower(): str(v) for k, v in headers.items()}
    content_type = named.get("content-type", "")
    json_body = body is not None and ("json" in content_type or (not content_type and body.lstrip()[:1] in ("{", "[")))
    if body is not None and not content_type:
        headers = {**headers, "Content-Type": "application/json" if json_body else "text/plain; charset=utf-8"}
    if json_body:
        try:
            orjson.loads(_MESSAGE.sub(lambda _: 'a \\"quoted\\" message', body))
        except orjson.JSONDecodeError:
            loader.error(f"{where}.body", "is not JSON once {{message}} is filled in (write it inside a string: '{\"text\": \"{{message}}\"}')")
    return HttpChannel(name, url, method, tuple((str(k), str(v)) for k, v in headers.items()), body, json_body,
                       _timeout(loader, t, where))


# `${VAR}` substitution gives strings, so a port or a switch the environment sets arrives as
# "2525" or "true": both spellings are taken.

def _port(loader, t: dict, where: str, default: int) -> int:
    value = t.get("port", default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        loader.error(f"{where}.port", f"must be a port number from 1 to 65535, not {value!r}")
        return default
    return value


def _flag(loader, t: dict, key: str, where: str, default: bool) -> bool:
    value = t.get(key, default)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        loader.error(f"{where}.{key}", f"must be true or false, not {value!r}")
        return default
    return value


def _timeout(loader, t: dict, where: str) -> float:
    timeout = loader.convert(parse_duration, t.get("timeout", "10s"), f"{where}.timeout", DEFAULT_TIMEOUT)
    if timeout <= 0:
        loader.error(f"{where}.timeout", "must be more than 0s")
    return timeout
