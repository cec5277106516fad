"""`request`: an outbound HTTP call, retried on connection errors, timeouts, 5xx and 429.

Every attempt carries `Idempotency-Key: <execution id>.<node key>`, so a receiver can tell a
retry (or the rare repeat after a crash between the call and the commit of its job) from a
new call; with `sign` the call is also signed the way a webhook provider signs (Standard
Webhooks by default, any scheme of the verify registry that signs), `webhook-id` being that
same key.  An outbound effect: its job is committed as soon as it succeeds.

A redirect is an answer like any other (a 3xx fails the node) unless `follow_redirects = true`;
then up to MAX_REDIRECTS hops are followed, each checked against `[outbound] deny`, and the
node's headers (its credentials, its signature) go to its URL's origin only: past another
origin a hop carries none of them.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Mapping
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from ... import verify
from ...core.errors import ConfigError
from ...core.units import parse_duration
from ..outbound import Denied, HttpClient, ResponseTooLarge, display_url, is_http_url, read_limited
from ..templates import Template, compile_value, stringify

NAME = "request"
FIELDS = ("method", "url", "headers", "query", "body", "timeout", "retries", "retry_backoff", "sign",
          "follow_redirects")
AT_ONCE = True
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_RETRIES = 10
MAX_REDIRECTS = 5                 # browsers allow 20; a webhook endpoint that needs more is broken
REDIRECTS = (301, 302, 303, 307, 308)
RESPONSE_LIMIT = 8 << 20          # what one node's result may hold; the job row stores it
RETRY_AFTER_LIMIT = 60.0          # a Retry-After past this is not waited for in a worker
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Signer:
    scheme: str
    secret: bytes = field(repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def sign(self, body: bytes, headers: Mapping[str, str], url: str, method: str) -> verify.SignedRequest:
        if self.scheme == "standard":   # Standard Webhooks' message id is our idempotency key
            headers = {**headers, "webhook-id": _header(headers, "idempotency-key")}
        return verify.sign_request(self.scheme, body, self.secret, time.time(), self.options,
                                   headers=headers, url=url, method=method)


@dataclass(frozen=True)
class RequestNode:
    method: str
    url: Any                          # a Template, or the constant URL
    headers: Mapping[str, Any]
    query: Mapping[str, Any]
    body: Any
    body_is_table: bool
    timeout: float
    retries: int
    retry_backoff: float
    signer: Signer | None
    follow_redirects: bool = False


def prepare(fields: Mapping[str, Any], path: str, report, known) -> RequestNode:
    method = fields.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        report(f"{path}.method", f"must be one of {', '.join(METHODS)}, not {method!r}")
        method = "POST"
    url = fields.get("url")
    if not isinstance(url, str) or not url:
        report(f"{path}.url", "a request needs a url (an http:// or https:// URL template)")
        url = ""
    compiled_url = compile_value(url)
    known_url = _url_known_at_load(compiled_url, known.env)
    if url and known_url is not None and not is_http_url(known_url):
        report(f"{path}.url", f"not a valid URL template: {display_url(known_url)!r} is not an http:// or https:// URL")
    headers = _table(fields, "headers", path, report)
    for name in headers:
        if not _HEADER_NAME.match(name):
            report(f"{path}.headers", f"not a valid header name: {name!r}")
    query = _table(fields, "query", path, report)
    body = fields.get("body")
    if body is not None and not isinstance(body, (str, dict, list)):
        report(f"{path}.body", "must be a table (sent as JSON) or a string (sent as is)")
        body = None
    retries = fields.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
        report(f"{path}.retries", f"must be a whole number from 0 to {MAX_RETRIES}, not {retries!r}")
        retries = 0
    follow_redirects = fields.get("follow_redirects", False)
    if not isinstance(follow_redirects, bool):
        report(f"{path}.follow_redirects", f"must be true or false, not {follow_redirects!r}")
        follow_redirects = False
    return RequestNode(
        method=method.upper(), url=compiled_url, headers=compile_value(headers), query=compile_value(query),
        body=compile_value(body), body_is_table=isinstance(body, (dict, list)),
        timeout=_duration(fields.get("timeout", "10s"), f"{path}.timeout", report, 10.0, positive=True),
        retries=retries,
        retry_backoff=_duration(fields.get("retry_backoff", "500ms"), f"{path}.retry_backoff", report, 0.5),
        signer=_signer(fields.get("sign"), f"{path}.sign", report) if "sign" in fields else None,
        follow_redirects=follow_redirects)


def _table(fields: Mapping[str, Any], key: str, path: str, report) -> dict:
    value = fields.get(key, {})
    if not isinstance(value, dict):
        report(f"{path}.{key}", "must be a table of name = value")
        return {}
    return value


def _duration(value: Any, where: str, report, default: float, positive: bool = False) -> float:
    try:
        seconds = parse_duration(value, where)
    except ConfigError as exc:
        report(where, exc.message)
        return default
    if positive and seconds <= 0:
        report(where, "must be more than 0s")
        return default
    return seconds


def _url_known_at_load(url: Any, env: Mapping[str, str]) -> str | None:
    """The URL when load time can tell it: a constant, or templates of `[env]` values only."""
    if not isinstance(url, Template):
        return url
    if all(p[0] == "$env" for p in url.paths):
        return stringify(url.render({"$env": env}))
    return None


def _signer(table: Any, where: str, report) -> Signer | None:
    if not isinstance(table, dict):
        report(where, 'must be a table such as { scheme = "standard", secret = "whsec_..." }')
        return None
    name = table.get("scheme", "standard")
    scheme = verify.SCHEMES.get(name) if isinstance(name, str) else None
    if scheme is None or scheme.sign is None or name == "none":
        signers = sorted(n for n, s in verify.SCHEMES.items() if s.sign is not None and n != "none")
        report(f"{where}.scheme", f"cannot sign with {name!r} (schemes that sign: {', '.join(signers)})")
        return None
    secret = table.get("secret", "")
    if not isinstance(secret, str):
        report(f"{where}.secret", "must be a string")
        return None
    if scheme.needs_secret and not secret:
        report(f"{where}.secret", f"scheme {name!r} signs with a secret: set secret")
        return None
    options = {k: v for k, v in table.items() if k not in ("scheme", "secret")}
    signer = Signer(name, secret.encode(), options)
    try:   # a trial signature: a bad key or a missing option is a load-time error, not a run-time one
        signer.sign(b"{}", {"Content-Type": "application/json", "Idempotency-Key": "check"}, "https://check.invalid/", "POST")
    except ConfigError as exc:
        report(f"{where}{exc.path.removeprefix('sign')}" if exc.path.startswith("sign") else where, exc.message)
        return None
    except ValueError:   # never echo the secret
        report(f"{where}.secret", f"not a key scheme {name!r} can sign with")
        return None
    return signer


@dataclass
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    query: list[tuple[str, str]]
    body: bytes | None
    added: tuple[str, ...] = ()       # headers the node did not set: the only ones sent past its origin


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def execute(prepared: RequestNode, run) -> dict:
    call = _render(prepared, run)
    client = run.resources.http
    attempts = prepared.retries + 1
    run.log(f"{call.method} {display_url(call.url)}")
    for attempt in range(1, attempts + 1):
        started = time.perf_counter()
        answer, error, retryable = await _attempt(client, call, prepared)
        entry: dict[str, Any] = {"attempt": attempt, "ms": round((time.perf_counter() - started) * 1000, 1)}
        entry.update({"status": answer.status} if answer is not None else {"error": error})
        if answer is not None and 200 <= answer.status < 300:
            run.log(f"attempt {attempt}/{attempts}", entry)
            return {"status": answer.status, "headers": answer.headers, "data": _data(answer)}
        if answer is not None:
            retryable = answer.status == 429 or answer.status >= 500
        again = retryable and attempt < attempts
        if again:
            delay = _retry_delay(prepared.retry_backoff, attempt, answer)
            entry["retry_in_ms"] = round(delay * 1000)
        run.log(f"attempt {attempt}/{attempts}", entry)
        if not again:
            break
        await asyncio.sleep(delay)
    tries = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
    if answer is not None:
        snippet = answer.body[:300].decode("utf-8", "replace")
        if answer.status in REDIRECTS and not prepared.follow_redirects:
            tries += " (a redirect: set follow_redirects = true to follow it)"
        raise RuntimeError(f"{call.method} {display_url(call.url)} answered {answer.status}{tries}: {snippet}")
    raise RuntimeError(f"{call.method} {display_url(call.url)} failed{tries}: {error}")


def _render(prepared: RequestNode, run) -> _Call:
    url = stringify(run.render(prepared.url))
    if not is_http_url(url):
        raise ValueError(f"url rendered to {display_url(url)!r}, not an http:// or https:// URL")
    headers = {name: stringify(value) for name, value in run.render(prepared.headers).items()}
    query = []
    for name, value in run.render(prepared.query).items():
        for item in value if isinstance(value, list) else [value]:
            query.append((name, stringify(item)))
    body, content_type = _body(prepared, run)
    added = []
    if content_type and _header(headers, "content-type") is None:
        headers["Content-Type"] = content_type
        added.append("Content-Type")
    if _header(headers, "idempotency-key") is None:
        headers["Idempotency-Key"] = f"{run.id_text}.{run.node_key}"
        added.append("Idempotency-Key")
    return _Call(prepared.method, url, headers, query, body, tuple(added))


def _body(prepared: RequestNode, run) -> tuple[bytes | None, str | None]:
    """The bytes to send and their default Content-Type: a table as JSON; a string as it is
    (labelled JSON when it is JSON); a lone template of an object as JSON too."""
    if prepared.body is None:
        return None, None
    value = run.render(prepared.body)
    if prepared.body_is_table or isinstance(value, (dict, list)):
        return orjson.dumps(value, default=str), "application/json"
    text = stringify(value)
    try:
        orjson.loads(text)
        looks_json = text.lstrip()[:1] in ("{", "[")
    except orjson.JSONDecodeError:
        looks_json = False
    return text.encode(), "application/json" if looks_json else "text/plain; charset=utf-8"


async def _attempt(client: HttpClient, call: _Call,
                   prepared: RequestNode) -> tuple[_Answer | None, str | None, bool]:
    """One try: (the answer, or None with the error and whether trying again may help)."""
    method, url, headers, body, query = call.method, call.url, call.headers, call.body, call.query
    if prepared.signer is not None:   # signed per attempt: a retry gets a fresh timestamp
        signed = prepared.signer.sign(body or b"", headers, call.url, call.method)
        headers = {**headers, **signed.headers}
        query = query + list(signed.query.items())
        if body is not None:
            body = signed.body     # wecom and feishu send the body encrypted
    origin = _origin(url)
    try:
        async with asyncio.timeout(prepared.timeout):   # for every hop together
            for hop in range(MAX_REDIRECTS + 1):
                async with client.request(method, url, params=query or None, data=body, headers=headers) as response:
                    location = response.headers.get("Location")
                    if not (prepared.follow_redirects and response.status in REDIRECTS and location):
                        return await _answer(response), None, False
                    if hop == MAX_REDIRECTS:
                        return None, f"more than {MAX_REDIRECTS} redirects", False
                    url, query = urljoin(str(response.url), location), []   # a Location is the whole URL
                if not is_http_url(url):
                    return None, f"redirected to {display_url(url)!r}, not an http:// or https:// URL", False
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, body = ("HEAD" if method == "HEAD" else "GET"), None   # as browsers do
                if _origin(url) != origin:   # and from then on, even back at the origin
                    headers = {name: value for name, value in headers.items() if name in call.added}
                if body is None:
                    headers = {name: value for name, value in headers.items() if name.lower() != "content-type"}
    except TimeoutError:
        return None, f"no answer within {prepared.timeout:g}s", True
    except (ResponseTooLarge, Denied) as exc:
        return None, str(exc), False
    except (aiohttp.InvalidURL, aiohttp.ClientConnectorCertificateError) as exc:   # trying again cannot help
        return None, f"{type(exc).__name__}: {exc}", False
    except aiohttp.ClientError as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True


async def _answer(response: aiohttp.ClientResponse) -> _Answer:
    received = await read_limited(response, RESPONSE_LIMIT)
    headers: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return _Answer(response.status, headers, received)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port or (443 if parts.scheme == "https" else 80)


def _retry_delay(backoff: float, attempt: int, answer: _Answer | None) -> float:
    """Exponential backoff; a 429 / 503 Retry-After asking for longer is honoured (to a limit)."""
    delay = backoff * 2 ** (attempt - 1)
    asked = answer.headers.get("retry-after") if answer is not None else None
    if asked:
        try:
            wait = float(asked) if asked.strip().isdigit() else parsedate_to_datetime(asked).timestamp() - time.time()
        except (TypeError, ValueError):
            wait = 0.0
        delay = max(delay, min(wait, RETRY_AFTER_LIMIT))
    return delay


def _data(answer: _Answer) -> Any:
    media = answer.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        if not answer.body.strip():
            return None
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            pass
    return answer.body.decode("utf-8", "replace")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name), None)
