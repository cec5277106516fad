"""`$context`: what a workflow sees of its request (SPEC section 5)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from .body import decode_content, parse_body, raw_text
from ..errors import RequestError
from ..records import timestamp

# Headers that carry credentials or signatures: never stored, never shown.
REDACTED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "x-hub-signature", "x-hub-signature-256",
    "x-gitlab-token", "stripe-signature", "x-slack-signature", "x-shopify-hmac-sha256",
    "webhook-signature", "svix-signature", "x-twilio-signature", "x-lark-signature",
})
REDACTED = "[redacted]"
UNPARSED = object()   # build_context(UNPARSED, ...): `data` is parsed when first read


class Context(dict):
    """A dict, so templates and scripts read it as plain data; `raw`, `received_at` and, once
    forgotten, `data` are computed only when something asks for them."""

    __slots__ = ("raw_body", "received", "body_limit")

    def __missing__(self, key: str):
        if key == "data":
            headers = self["headers"]
            try:
                value = parse_body(decode_content(self.raw_body, headers.get("content-encoding"), self.body_limit),
                                   headers.get("content-type"))
            except RequestError:  # it parsed when accepted; only a lowered limit refuses it now
                value = None
        elif key == "raw":
            value = raw_text(self.raw_body)
        elif key == "received_at":
            value = timestamp(self.received)
        else:
            raise KeyError(key)
        self[key] = value
        return value

    def forget_data(self) -> None:
        """Queued work then holds the body's bytes, not its object tree: thousands of queued
        executions are nothing for the garbage collector to walk.  Parsed again on demand."""
        self.pop("data", None)


def build_context(data, headers: dict, query_string: bytes, params: dict, method: str,
                  path: str, ip: str, received: float, raw_body: bytes, body_limit: int) -> Context:
    context = Context(headers=headers, query=parse_query(query_string), params=params,
                      method=method, path=path, ip=ip)
    if data is not UNPARSED:
        context["data"] = data
    context.raw_body = raw_body
    context.received = received
    context.body_limit = body_limit
    return context



def parse_query(query_string: bytes) -> dict:
    if not query_string:
        return {}
    query: dict = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in query:
            earlier = query[name]
            query[name] = earlier + [value] if isinstance(earlier, list) else [earlier, value]
        else:
            query[name] = value
    return query


def redact(headers: dict, extra: frozenset[str] = frozenset()) -> dict:
    return {name: REDACTED if name in REDACTED_HEADERS or name in extra else value
            for name, value in headers.items()}
