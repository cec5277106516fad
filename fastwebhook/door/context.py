"""`$context`: what a workflow sees of its request (SPEC section 5), built from the stored request.

One function builds it, `context_of`, from a `StoredRequest` and the body as received: the live
run, a run recovered after a crash and a replay see the same values.  Headers, query and data
are worked out only when something reads them.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from ..core.errors import RequestError
from ..http.messages import parse_query
from ..store.rows import StoredRequest
from ..core.units import timestamp
from .body import decode_content, parse_body, raw_text

# Headers that carry credentials or signatures: never stored, never shown.  `[storage]
# redact_headers` adds names to these; none can be taken out (safe by default).
REDACTED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "x-hub-signature", "x-hub-signature-256",
    "x-gitlab-token", "stripe-signature", "x-slack-signature", "x-shopify-hmac-sha256",
    "webhook-signature", "svix-signature", "x-twilio-signature", "x-lark-signature",
    # API keys and bearer-like tokens, as common APIs and gateways name them
    "x-api-key", "api-key", "apikey", "x-apikey", "x-auth-token", "x-access-token", "x-token",
    "x-webhook-token", "x-webhook-secret", "private-token", "x-csrf-token", "x-xsrf-token",
    "x-amz-security-token", "x-goog-api-key", "x-functions-key", "ocp-apim-subscription-key",
    "x-vault-token", "x-shopify-access-token", "set-cookie",
})
REDACTED = "[redacted]"
COMPUTED = ("headers", "query", "data", "raw", "received_at")   # the keys __missing__ makes
UNPARSED = object()   # context_of(..., data=UNPARSED): `data` is parsed when first read


class Context(dict):
    """A dict, so templates and scripts read it as plain data; its costly keys are computed
    the first time something asks for them."""

    __slots__ = ("stored", "raw_body", "body_limit")

    def __missing__(self, key: str):
        stored = self.stored
        if key == "headers":
            value = headers_of(stored.headers)
        elif key == "query":
            value = query_of(stored.query)
        elif key == "data":
            headers = self["headers"]
            try:
                value = parse_body(decode_content(self.raw_body, headers.get("content-encoding"), self.body_limit),
                                   headers.get("content-type"))
            except RequestError:  # it parsed when accepted; only a lowered limit refuses it now
                value = None
        elif key == "raw":
            value = raw_text(self.raw_body)
        elif key == "received_at":
            value = timestamp(stored.received_at)
        else:
            raise KeyError(key)
        self[key] = value
        return value

    def filled(self, keys: frozenset[str] | None = None) -> dict:
        """Itself with every key computed, for whoever takes the whole context (a dict: JSON
        writes it as one, with no copy); or only those of `keys` it has, for a script that can
        name no others."""
        if keys is None:
            for key in COMPUTED:
                self[key]
            return self
        return {key: self[key] for key in keys if key in COMPUTED or key in self}


def context_of(stored: StoredRequest, body: bytes, body_limit: int, data=UNPARSED) -> Context:
    context = Context(params=stored.params, method=stored.method, path=stored.path, ip=stored.ip)
    if data is not UNPARSED:
        context["data"] = data
    context.stored = stored
    context.raw_body = body
    context.body_limit = body_limit
    return context


def headers_of(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Names lower-cased (they are stored so); a repeated header's values joined with ", "."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def query_of(query_string: str) -> dict:
    """A repeated parameter becomes a list."""
    query: dict = {}
    parsed = parse_query(query_string)
    for name in parsed:
        if name not in query:
            values = parsed.getall(name)
            query[name] = values[0] if len(values) == 1 else values
    return query


def stored_headers(pairs: list[tuple[str, str]], secret: frozenset[str]) -> list[tuple[str, str]]:
    """The request's headers as stored (names lower-cased, as the protocol gives them), the
    values of `secret` ones (REDACTED_HEADERS and the scheme's own) replaced."""
    return [(pair[0], REDACTED) if pair[0] in secret else pair for pair in pairs]


def stored_query(query_string: bytes, secret_names: frozenset[str]) -> str:
    """The query string as stored: values of secret parameters replaced."""
    text = query_string.decode("latin-1")
    if not secret_names or not text:
        return text
    fields = []
    for field in text.split("&"):
        name = field.partition("=")[0]
        if unquote_plus(name) in secret_names:
            field = f"{name}={REDACTED}"
        fields.append(field)
    return "&".join(fields)
