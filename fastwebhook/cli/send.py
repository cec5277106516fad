"""`fastwebhook send`: a test webhook, signed the way a provider signs it, and the answer printed.

The signature comes from the receiver's own registry (`verify.sign`), so what `send` sends is
what the server checks; the delivery-id header each provider adds comes with it, fresh each
time, so two sends are two deliveries (give the header with -H to test de-duplication).
Needs no config: the receiver may be another host.  Exit 0 on 2xx, 1 otherwise, 2 on usage
(main.EXIT_CODES).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import secrets
import ssl
import string
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import orjson

from .. import verify
from ..core.errors import ConfigError

EXIT_USAGE = 2  # argparse's own code for a bad command line
BODY_METHODS = ("POST", "PUT", "PATCH")


def _uuid() -> str:
    return str(uuid.uuid4())


def _svix_id() -> str:
    return "msg_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(27))


# Where each provider names the delivery (the receiver's default dedup key). Stripe and Slack
# carry theirs in the body, so the body given is sent as it is.
DELIVERY_ID_HEADERS: dict[str, tuple[str, Callable[[], str]]] = {
    "github": ("X-GitHub-Delivery", _uuid),
    "gitlab": ("X-Gitlab-Event-UUID", _uuid),
    "shopify": ("X-Shopify-Webhook-Id", _uuid),
    "standard": ("webhook-id", _svix_id),
    "twilio": ("I-Twilio-Idempotency-Token", _uuid),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="http:// or https:// URL of the receiver")
    parser.add_argument("--scheme", default="none", help="verification scheme to sign for (github, hmac, ...)")
    parser.add_argument("--secret", help="the signing secret")
    parser.add_argument("--secret-file", help="read the secret from this file (keeps it out of `ps`)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a scheme option as in [workflows.K.verify], e.g. header=X-Signature")
    parser.add_argument("-d", "--data", help="the body: JSON text, or @FILE (@- for stdin); default {} for POST")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="an extra header; it wins over any header send would add")
    parser.add_argument("-X", "--method", default="POST", help="the HTTP method (default POST)")
    parser.add_argument("--content-type", help="default application/json when there is a body")
    parser.add_argument("--cacert", help="also trust the CAs in this PEM file (https)")
    parser.add_argument("-k", "--insecure", action="store_true", help="do not verify the server's certificate")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the request sent to stderr")
    parser.add_argument("--json", action="store_true", help="print {status, headers, body} as JSON")


class _Usage(Exception):
    """A command line that cannot be sent as asked: exit 2."""


@dataclass
class _Outgoing:
    method: str
    https: bool
    host: str
    port: int | None
    target: str
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def send(args: argparse.Namespace) -> int:
    try:
        request = _outgoing(args)
        context = _client_tls(args) if request.https else None
    except _Usage as exc:
        print(f"fastwebhook send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        print(f"> {request.method} {request.target} HTTP/1.1", file=sys.stderr)
        for name, value in request.headers:
            print(f"> {name}: {value}", file=sys.stderr)
    try:
        response, body = _deliver(request, context, args.timeout)
    except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError and timeouts are OSErrors
        print(f"fastwebhook send: {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        headers: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        print(orjson.dumps({"status": response.status, "headers": headers,
                            "body": _body_value(body, headers.get("content-type", ""))},
                           option=orjson.OPT_INDENT_2).decode())
    else:
        version = "HTTP/1.0" if response.version == 10 else "HTTP/1.1"
        print(f"{version} {response.status} {response.reason}")
        for name, value in response.getheaders():
            print(f"{name}: {value}")
        print()
        text = body.decode("utf-8", "replace")
        print(text, end="" if text.endswith("\n") or not text else "\n")
    return 0 if 200 <= response.status < 300 else 1


def _outgoing(args: argparse.Namespace) -> _Outgoing:
    """The request exactly as it will be sent: body, provider headers, signature, then -H."""
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Usage(f"not an http:// or https:// URL: {args.url!r}")
    try:
        port = parts.port
    except ValueError:
        raise _Usage(f"not a valid port in {args.url!r}") from None
    method = args.method.upper()
    if not method.isascii() or not method.isalpha():
        raise _Usage(f"not an HTTP method: {args.method!r}")
    body = _body(args.data, method)
    given = [_header(text) for text in args.header]
    ours: dict[str, tuple[str, str]] = {}   # lower-cased name -> (name, value); later ones win

    def add(name: str, value: str) -> None:
        ours[name.lower()] = (name, value)

    add("User-Agent", "fastwebhook-send")
    if body or method in BODY_METHODS:
        add("Content-Type", args.content_type or "application/json")
    if parts.username is not None:  # like curl: https://user:pass@host/ means Basic auth
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        add("Authorization", "Basic " + base64.b64encode(credentials).decode())
    if args.scheme in DELIVERY_ID_HEADERS:
        name, make_id = DELIVERY_ID_HEADERS[args.scheme]
        add(name, make_id())
    # The signer sees the headers as sent (a scheme may sign one, e.g. hmac's {header:Name}).
    seen = {name: value for name, value in ours.values()}
    seen.update(given)
    url = args.url.split("#", 1)[0]
    signed_headers, body, query = _signature(args, body, seen, url, method)
    for name, value in signed_headers.items():
        add(name, value)
    if body or method in BODY_METHODS:
        add("Content-Length", str(len(body)))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if query:
        target += ("&" if parts.query else "?") + urlencode(query)
    overridden = {name.lower() for name, _ in given}
    headers = [pair for key, pair in ours.items() if key not in overridden] + given
    return _Outgoing(method, parts.scheme == "https", parts.hostname, port, target, body, headers)


def _body(data: str | None, method: str) -> bytes:
    if data is None:
        return b"{}" if method in BODY_METHODS else b""
    if not data.startswith("@"):
        return data.encode()
    if data == "@-":
        return sys.stdin.buffer.read()
    try:
        with open(data[1:], "rb") as file:
            return file.read()
    except OSError as exc:
        raise _Usage(f"--data {data}: {exc.strerror}") from None


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
        raise _Usage(f"-H wants 'Name: value', not {text!r}")
    return name, value.strip()


def _signature(args: argparse.Namespace, body: bytes, headers: dict[str, str], url: str,
               method: str) -> tuple[Mapping[str, str], bytes, Mapping[str, str]]:
    """(headers to add, the body to send, query parameters to add) as the scheme signs."""
    scheme = verify.SCHEMES.get(args.scheme)
    signers = sorted(name for name, entry in verify.SCHEMES.items() if entry.sign is not None)
    if scheme is None or scheme.sign is None:
        what = "unknown scheme" if scheme is None else "cannot sign for scheme"
        raise _Usage(f"{what} {args.scheme!r} (schemes that sign: {', '.join(signers)})")
    secret = _secret(args)
    if scheme.needs_secret and secret is None:
        raise _Usage(f"scheme {args.scheme!r} needs --secret or --secret-file")
    if not scheme.needs_secret and secret is not None:
        raise _Usage(f"scheme {args.scheme!r} uses no secret; choose a --scheme that does")
    options: dict[str, str] = {}
    for text in args.option:
        key, equals, value = text.partition("=")
        if not equals or not key.strip():
            raise _Usage(f"--option wants KEY=VALUE, not {text!r}")
        options[key.strip()] = value
    now = time.time()
    try:
        # `sign_request` also encrypts the body (wecom, feishu) and puts query signatures in the
        # URL (token with `query`, twilio for JSON); plain `sign` gives headers only.
        if hasattr(verify, "sign_request"):
            signed = verify.sign_request(args.scheme, body, secret or b"", now, options,
                                         headers=headers, url=url, method=method)
            return signed.headers, signed.body, signed.query
        return verify.sign(args.scheme, body, secret or b"", now, options, headers=headers), body, {}
    except ConfigError as exc:  # e.g. hmac without its header option: say which flag fixes it
        where = exc.path.removeprefix("sign.")
        hint = f"--option {where}=...: " if where and exc.path.startswith("sign.") else ""
        raise _Usage(f"scheme {args.scheme!r}: {hint}{exc.message}") from None
    except ValueError as exc:  # a secret the scheme cannot use (e.g. not base64 after whsec_)
        raise _Usage(f"scheme {args.scheme!r}: {exc}") from None


def _secret(args: argparse.Namespace) -> bytes | None:
    if args.secret is not None and args.secret_file is not None:
        raise _Usage("give --secret or --secret-file, not both")
    if args.secret_file is None:
        return None if args.secret is None else args.secret.encode()
    try:
        with open(args.secret_file, "rb") as file:
            return file.read().rstrip(b"\r\n")
    except OSError as exc:
        raise _Usage(f"--secret-file {args.secret_file}: {exc.strerror}") from None


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system's CAs; --cacert adds to them
    if args.cacert:
        try:
            context.load_verify_locations(args.cacert)
        except (OSError, ValueError) as exc:
            raise _Usage(f"--cacert {args.cacert}: {exc}") from None
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _deliver(request: _Outgoing, context: ssl.SSLContext | None,
             timeout: float) -> tuple[http.client.HTTPResponse, bytes]:
    if request.https:
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            request.host, request.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(request.host, request.port, timeout=timeout)
    try:
        names = {name.lower() for name, _ in request.headers}
        connection.putrequest(request.method, request.target, skip_host="host" in names,
                              skip_accept_encoding=True)
        for name, value in request.headers:
            connection.putheader(name, value)
        connection.endheaders(request.body or None)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def _body_value(body: bytes, content_type: str) -> Any:
    """A JSON answer as its value, anything else as text, for `send --json`."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return body.decode("utf-8", "replace")
