"""Trust at the door, end to end (SPEC sections 4, 6, 8, 9, 10): every verification scheme and
provider handshake through one real server over real sockets, with a real SQLite file.

For each scheme: a valid request is 202 and its execution resolves; a wrong signature, a missing
header and (where the scheme has one) an expired timestamp are 401 with a request-log reason that
says why; the second of two rotated secrets is accepted; the scheme's default dedup key turns a
repeat into 200 "duplicate" with the original id; and no secret shows up in the 401 body, the
request log, the stored execution or /metrics.  Senders are simulated with `sign_request`, which
produces what each provider sends.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import orjson
import pytest

from client_support import Answer, admin, log_entry, request, wait_for_execution
from conftest import raw_exchange, start_server, write_config
from fastwebhook.verify import generate_keypair, sign_request

REDACTED = "[redacted]"


def _whsec(material: bytes) -> str:
    return "whsec_" + base64.b64encode(material).decode()


# Distinctive secrets, so a leak anywhere is found by a plain substring search.
GH = ("gh-old-Secret-7d41c2", "gh-new-Secret-19aa0e")
GL = ("gl-old-Token-5b0e77", "gl-new-Token-a93c41")
STRIPE = ("whsec_stripeOLDsecret4f2a9c", "whsec_stripeNEWsecret0b7d13")
SLACK = ("slack-old-Signing-8e21f0", "slack-new-Signing-33c9ab")
SHOPIFY = ("shopify-old-Secret-60de4a", "shopify-new-Secret-f1750c")
STD = (_whsec(b"standard-old-key-material-01"), _whsec(b"standard-new-key-material-02"))
STD_WRONG = _whsec(b"standard-wrong-key-material")
ED_OLD, ED_NEW, ED_WRONG = generate_keypair(), generate_keypair(), generate_keypair()  # (whsk_, whpk_)
TWILIO = ("twilio-old-AuthToken-2c8e", "twilio-new-AuthToken-9f41")
WECOM = ("wecomOldToken71b", "wecomNewToken4c2")
WECOM_AES = base64.b64encode(hashlib.sha256(b"fastwebhook wecom test key").digest()).decode()[:43]
WECOM_CORP = "ww3f0c9e1d2b7a6c54"
FEISHU = ("feishu-old-EncryptKey-d07a", "feishu-new-EncryptKey-52be")
FEISHU_TOKEN = "feishu-Verification-Token-6e1f"
MAC = ("mac-old-Secret-0aa713", "mac-new-Secret-b6e2d9")
TOK = ("tok-old-Secret-44f0e1", "tok-new-Secret-c2a8b7")
QTOK = ("qtok-old-Secret-81d3", "qtok-new-Secret-7e05")
BASIC = ("basic-old-Password-3c7e", "basic-new-Password-e819")
META_TOKEN = "meta-Verify-Token-90b1c4"
WRONG = "wrong-Secret-000000"


def _json_body(uid: str, n: int) -> bytes:
    return orjson.dumps({"id": uid, "event_id": uid, "type": "event_callback", "n": n})


def _feishu_body(uid: str, n: int) -> bytes:
    return orjson.dumps({"schema": "2.0", "header": {"event_id": uid, "event_type": "im.message.receive_v1"},
                         "event": {"n": n, "text": "héllo"}})


def _form_body(uid: str, n: int) -> bytes:
    return urlencode([("MessageSid", uid), ("From", "+15550001111"), ("Body", f"n={n} & more"),
                      ("To", "+15550002222")]).encode()


def _xml_body(uid: str, n: int) -> bytes:
    return (f"<xml><ToUserName><![CDATA[{WECOM_CORP}]]></ToUserName><MsgId>{uid}</MsgId>"
            f"<Content><![CDATA[n={n} 你好]]></Content></xml>").encode()


@dataclass(frozen=True)
class Case:
    key: str                         # workflow key; served at /t/<key>
    scheme: str
    keys: tuple[str, str]            # what the sender signs with: (old, new)
    wrong: str                       # a key the server does not know
    verify: str                      # the TOML lines of [workflows.<key>.verify] after `scheme`
    drops: tuple[tuple[str, str, str], ...]   # (header|query, name, what the log reason says)
    options: dict = field(default_factory=dict)   # sign_request options
    content_type: str = "application/json"
    body: Callable[[str, int], bytes] = _json_body
    expires: str | None = None       # the timestamp header named in an expiry's reason
    dedup_header: str | None = None  # header carrying the scheme's default delivery id
    dedup_body: bool = False         # the delivery id is in the body (Stripe id, Slack event_id)
    public_url: str = ""
    leaks: tuple[str, ...] = ()      # text that must never be shown
    signature_header: str | None = None   # stored redacted
    plaintext: bool = False          # the body on the wire is encrypted: data is the plaintext

    def __str__(self) -> str:
        return self.key


def _secrets(values) -> str:
    return "secrets = [" + ", ".join(f'"{v}"' for v in values) + "]"


CASES = [
    Case("github", "github", GH, WRONG, _secrets(GH),
         (("header", "X-Hub-Signature-256", "missing signature header X-Hub-Signature-256"),),
         dedup_header="X-GitHub-Delivery", leaks=GH, signature_header="x-hub-signature-256"),
    Case("gitlab", "gitlab", GL, WRONG, _secrets(GL),
         (("header", "X-Gitlab-Token", "missing token header X-Gitlab-Token"),),
         dedup_header="Idempotency-Key", leaks=GL, signature_header="x-gitlab-token"),
    Case("stripe", "stripe", STRIPE, "whsec_stripeWRONGsecret", _secrets(STRIPE),
         (("header", "Stripe-Signature", "missing signature header Stripe-Signature"),),
         expires="Stripe-Signature", dedup_body=True, leaks=STRIPE, signature_header="stripe-signature"),
    Case("slack", "slack", SLACK, WRONG, _secrets(SLACK),
         (("header", "X-Slack-Signature", "missing signature header X-Slack-Signature"),
          ("header", "X-Slack-Request-Timestamp", "missing timestamp header X-Slack-Request-Timestamp")),
         expires="X-Slack-Request-Timestamp", dedup_body=True, leaks=SLACK,
         signature_header="x-slack-signature"),
    Case("shopify", "shopify", SHOPIFY, WRONG, _secrets(SHOPIFY),
         (("header", "X-Shopify-Hmac-Sha256", "missing signature header X-Shopify-Hmac-Sha256"),),
         dedup_header="X-Shopify-Webhook-Id", leaks=SHOPIFY, signature_header="x-shopify-hmac-sha256"),
    Case("standard", "standard", STD, STD_WRONG, _secrets(STD),
         (("header", "webhook-signature", "missing signature header webhook-signature"),
          ("header", "webhook-timestamp", "missing timestamp header webhook-timestamp"),
          ("header", "webhook-id", "missing header webhook-id")),
         expires="webhook-timestamp", dedup_header="webhook-id",
         leaks=STD + tuple(s.removeprefix("whsec_") for s in STD), signature_header="webhook-signature"),
    Case("standard-ed25519", "standard", (ED_OLD[0], ED_NEW[0]), ED_WRONG[0],
         _secrets((ED_OLD[1], ED_NEW[1])),
         (("header", "webhook-signature", "missing signature header webhook-signature"),),
         expires="webhook-timestamp", dedup_header="webhook-id",
         leaks=(ED_OLD[0], ED_NEW[0]), signature_header="webhook-signature"),
    Case("twilio-form", "twilio", TWILIO, WRONG, _secrets(TWILIO),
         (("header", "X-Twilio-Signature", "missing signature header X-Twilio-Signature"),),
         content_type="application/x-www-form-urlencoded", body=_form_body,
         dedup_header="I-Twilio-Idempotency-Token", leaks=TWILIO, signature_header="x-twilio-signature"),
    Case("twilio-json", "twilio", TWILIO, WRONG, _secrets(TWILIO),
         (("header", "X-Twilio-Signature", "missing signature header X-Twilio-Signature"),),
         dedup_header="I-Twilio-Idempotency-Token", public_url="https://hooks.example.com",
         leaks=TWILIO, signature_header="x-twilio-signature"),
    Case("wecom", "wecom", WECOM, "wecomWrongToken", _secrets(WECOM)
         + f'\nencoding_aes_key = "{WECOM_AES}"\ncorpid = "{WECOM_CORP}"',
         (("query", "msg_signature", "missing query parameter msg_signature"),
          ("query", "nonce", "missing query parameter nonce")),
         options={"encoding_aes_key": WECOM_AES, "corpid": WECOM_CORP}, content_type="text/xml",
         body=_xml_body, leaks=WECOM + (WECOM_AES,), plaintext=True),
    Case("feishu", "feishu", FEISHU, WRONG, _secrets(FEISHU),
         (("header", "X-Lark-Signature", "missing signature header X-Lark-Signature"),
          ("header", "X-Lark-Request-Nonce", "missing signature header X-Lark-Request-Nonce")),
         body=_feishu_body, leaks=FEISHU, signature_header="x-lark-signature", plaintext=True),
    Case("hmac", "hmac", MAC, WRONG, _secrets(MAC) + '\nheader = "X-Signature"\nalgorithm = "sha512"'
         '\nencoding = "base64"\nprefix = "v1="\ntimestamp_header = "X-Timestamp"\ntolerance = "300s"'
         '\nsigned = "{timestamp}:{header:X-Event}:{body}"',
         (("header", "X-Signature", "missing signature header X-Signature"),
          ("header", "X-Timestamp", "missing timestamp header X-Timestamp"),
          ("header", "X-Event", "missing header X-Event")),
         options={"header": "X-Signature", "algorithm": "sha512", "encoding": "base64", "prefix": "v1=",
                  "timestamp_header": "X-Timestamp", "signed": "{timestamp}:{header:X-Event}:{body}"},
         expires="X-Timestamp", leaks=MAC, signature_header="x-signature"),
    Case("token-header", "token", TOK, WRONG, _secrets(TOK) + '\nheader = "X-Api-Token"\nprefix = "Bearer "',
         (("header", "X-Api-Token", "missing token header X-Api-Token"),),
         options={"header": "X-Api-Token", "prefix": "Bearer "}, leaks=TOK, signature_header="x-api-token"),
    Case("token-query", "token", QTOK, WRONG, _secrets(QTOK) + '\nquery = "key"',
         (("query", "key", "missing query parameter key"),), options={"query": "key"}, leaks=QTOK),
    Case("basic", "basic", BASIC, WRONG, _secrets(BASIC) + '\nusername = "hook-user"',
         (("header", "Authorization", "missing header Authorization"),),
         options={"username": "hook-user"},
         leaks=BASIC + tuple(base64.b64encode(f"hook-user:{p}".encode()).decode() for p in BASIC),
         signature_header="authorization"),
]
BY_KEY = {case.key: case for case in CASES}
ALL_LEAKS = tuple(s for case in CASES for s in case.leaks) + (META_TOKEN, FEISHU_TOKEN, WECOM_AES)


def _workflow(case: Case) -> str:
    extra = 'methods = ["GET", "POST"]\n' if case.scheme == "wecom" else ""
    extra += f'public_url = "{case.public_url}"\n' if case.public_url else ""
    return (f'\n[workflows.{case.key}]\npath = "/t/{case.key}"\n{extra}'
            f'  [workflows.{case.key}.verify]\n  scheme = "{case.scheme}"\n{case.verify}\n')


ECHO = """
  [[workflows.{key}.nodes]]
  key = "echo"
  type = "response"
  body = {{ data = "{{{{$context.data}}}}", ip = "{{{{$context.ip}}}}" }}
"""

CONFIG = "".join(_workflow(case) for case in CASES) + f"""
[workflows.wecom-echo]
path = "/t/wecom-echo"
mode = "sync"
  [workflows.wecom-echo.verify]
  scheme = "wecom"
  {_secrets(WECOM)}
  encoding_aes_key = "{WECOM_AES}"
  corpid = "{WECOM_CORP}"
{ECHO.format(key="wecom-echo")}
[workflows.feishu-echo]
path = "/t/feishu-echo"
mode = "sync"
  [workflows.feishu-echo.verify]
  scheme = "feishu"
  {_secrets(FEISHU)}
{ECHO.format(key="feishu-echo")}
[workflows.feishu-token]
path = "/t/feishu-token"
  [workflows.feishu-token.verify]
  scheme = "feishu"
  token = "{FEISHU_TOKEN}"

[workflows.meta]
path = "/t/meta"
methods = ["GET", "POST"]
  [workflows.meta.verify]
  scheme = "github"
  secret = "{GH[1]}"
  verify_token = "{META_TOKEN}"

[workflows.wecom-vector]
path = "/t/wecom-vector"
methods = ["GET", "POST"]
  [workflows.wecom-vector.verify]
  scheme = "wecom"
  token = "QDG6eK"
  encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
  corpid = "wx5823bf96d3bd56c7"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(write_config(tmp_path_factory.mktemp("trust"), CONFIG))
    yield running
    running.stop()


# --- the client side ---------------------------------------------------------------------------

def executions_of(running, workflow: str) -> set[str]:
    service = running.server.service
    running.call(service.drain)
    items = admin(running, f"/executions?workflow={workflow}&limit=1000").json()["items"]
    return {item["id"] for item in items}


def assert_secret_free(text: str | bytes, secrets=ALL_LEAKS) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets:
        assert secret not in text, f"secret {secret[:6]}... shown in {text[:300]!r}"


@dataclass
class Sent:
    path: str
    query: dict
    body: bytes
    headers: dict

    @property
    def target(self) -> str:
        return self.path + ("?" + urlencode(self.query) if self.query else "")

    def without(self, where: str, name: str) -> "Sent":
        if where == "query":
            return Sent(self.path, {k: v for k, v in self.query.items() if k != name}, self.body, self.headers)
        return Sent(self.path, self.query, self.body,
                    {k: v for k, v in self.headers.items() if k.lower() != name.lower()})

    def send(self, running, method: str = "POST") -> Answer:
        return request(running, method, self.target, self.body, self.headers)


def signed(running, case: Case, key: str, uid: str | None = None, n: int = 1, now: float | None = None,
           path: str | None = None) -> Sent:
    """What a sender of `case.scheme` sends for delivery `uid`, signed with `key` at `now`."""
    uid = uid or uuid.uuid4().hex
    path = path or f"/t/{case.key}"
    raw = case.body(uid, n)
    headers = {"Content-Type": case.content_type}
    if case.dedup_header:
        headers[case.dedup_header] = uid
    if case.scheme == "hmac":
        headers["X-Event"] = "order.created"
    url = None
    if case.scheme == "twilio":
        url = (case.public_url or f"http://{running.host}:{running.port}") + path
    result = sign_request(case.scheme, raw, key.encode(), time.time() if now is None else now, case.options,
                          headers=headers, url=url)
    if case.scheme == "twilio":
        assert result.url.startswith(url)
    return Sent(path, dict(result.query), result.body, {**headers, **result.headers})


def _rejected(running, answer: Answer, case: Case, sent: Sent, *reason_parts: str) -> dict:
    """A 401 whose log entry says `reason_parts`, and where no secret shows."""
    assert answer.status == 401, (answer.status, answer.body)
    assert set(answer.json()) == {"error"}
    assert answer.headers.get("x-execution-id") is None
    entry = log_entry(running, answer)
    assert (entry["status"], entry["workflow"], entry["path"]) == (401, case.key, sent.path)
    assert entry["execution_id"] is None
    for part in reason_parts:
        assert part in entry["reason"], (part, entry["reason"])
    # The log names the scheme and the SHA-256 of the body received, never a secret.
    assert f"scheme={case.scheme}" in entry["reason"], entry["reason"]
    assert f"body_sha256={hashlib.sha256(sent.body).hexdigest()}" in entry["reason"], entry["reason"]
    assert_secret_free(answer.body)
    assert_secret_free(orjson.dumps(entry))
    return entry


# --- every scheme --------------------------------------------------------------------------------

def _check_stored(record: dict, case: Case, sent: Sent, uid: str, n: int = 1) -> None:
    text = orjson.dumps(record)
    assert_secret_free(text)
    stored = record["request"]
    assert stored["path"] == sent.path
    assert stored["ip"] == "127.0.0.1"
    if case.signature_header:
        assert stored["headers"][case.signature_header] == REDACTED
    if case.key == "token-query":
        assert stored["query"] == {"key": REDACTED}
    expected = case.body(uid, n)
    if case.content_type == "application/json":
        assert stored["data"] == orjson.loads(expected)
    elif case.content_type.startswith("application/x-www-form"):
        assert stored["data"]["MessageSid"] == uid and stored["data"]["Body"] == f"n={n} & more"
    else:  # wecom: the decrypted XML, as a string
        assert stored["data"] == expected.decode()
    if case.plaintext:
        assert sent.body != expected  # what went over the wire was encrypted


@pytest.mark.parametrize("case", CASES, ids=str)
def test_valid_request_is_accepted_and_its_execution_resolves(server, case):
    uid = uuid.uuid4().hex
    sent = signed(server, case, case.keys[0], uid)
    answer = sent.send(server)
    assert answer.status == 202, (answer.status, answer.body)
    body = answer.json()
    assert body["status"] == "queued"
    assert answer.headers["x-execution-id"] == body["execution_id"]
    record = wait_for_execution(server, body["execution_id"])
    assert record["status"] == "resolved", record
    assert record["workflow"] == case.key
    _check_stored(record, case, sent, uid)
    # The stored execution as the admin API serves it, byte for byte.
    assert_secret_free(admin(server, f"/executions/{body['execution_id']}").body)
    entry = log_entry(server, answer)
    assert (entry["status"], entry["reason"], entry["execution_id"]) == (202, None, body["execution_id"])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_second_of_rotated_secrets_is_accepted(server, case):
    uid = uuid.uuid4().hex
    sent = signed(server, case, case.keys[1], uid)
    answer = sent.send(server)
    assert answer.status == 202, (answer.status, answer.body)
    record = wait_for_execution(server, answer.json()["execution_id"])
    assert record["status"] == "resolved"
    _check_stored(record, case, sent, uid)


_WRONG_MESSAGE = {"gitlab": "invalid token", "token": "invalid token", "basic": "invalid credentials"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_wrong_signature_is_401_and_says_the_scheme(server, case):
    now, uid = int(time.time()), uuid.uuid4().hex
    sent = signed(server, case, case.wrong, uid, now=now)
    answer = sent.send(server)
    message = _WRONG_MESSAGE.get(case.scheme, "invalid signature")
    entry = _rejected(server, answer, case, sent, message)
    assert answer.json()["error"] == message
    if case.scheme == "basic":
        assert answer.headers["www-authenticate"].startswith('Basic realm="fastwebhook"')
    # Nor is the signature the server expected shown (same body, time and delivery id).
    if case.scheme in ("github", "shopify", "stripe", "slack", "hmac", "standard", "twilio"):
        good = signed(server, case, case.keys[0], uid, now=now)
        expected = [v for k, v in good.headers.items() if k.lower() == case.signature_header]
        assert expected and expected != [v for k, v in sent.headers.items() if k.lower() == case.signature_header]
        assert_secret_free(answer.body, expected)
        assert_secret_free(orjson.dumps(entry), expected)


def _drops():
    for case in CASES:
        for where, name, reason in case.drops:
            yield pytest.param(case, where, name, reason, id=f"{case.key}-{name}")


@pytest.mark.parametrize("case, where, name, reason", list(_drops()))
def test_missing_header_is_401_and_the_log_names_it(server, case, where, name, reason):
    sent = signed(server, case, case.keys[0]).without(where, name)
    answer = sent.send(server)
    _rejected(server, answer, case, sent, reason)


@pytest.mark.parametrize("case", [c for c in CASES if c.expires], ids=str)
def test_expired_timestamp_is_401_even_when_validly_signed(server, case):
    sent = signed(server, case, case.keys[0], now=time.time() - 3600)
    answer = sent.send(server)
    entry = _rejected(server, answer, case, sent, "timestamp outside tolerance", f"header={case.expires}",
                      "tolerance=300s")
    skew = re.search(r"skew=\+(\d+)s", entry["reason"])
    assert skew and 3599 <= int(skew[1]) <= 3610, entry["reason"]
    # A timestamp from the future is as stale.
    ahead = signed(server, case, case.keys[1], now=time.time() + 3600)
    _rejected(server, ahead.send(server), case, ahead, "timestamp outside tolerance", "skew=-")


@pytest.mark.parametrize("case", [c for c in CASES if c.dedup_header or c.dedup_body], ids=str)
def test_repeat_of_a_delivery_is_200_duplicate_with_the_original_id(server, case):
    uid = uuid.uuid4().hex
    first = signed(server, case, case.keys[0], uid, n=1).send(server)
    assert first.status == 202, first.body
    original = first.json()["execution_id"]
    # The sender's retry: same delivery id, signed afresh (new timestamp, other secret), other content.
    repeat = signed(server, case, case.keys[1], uid, n=2)
    again = repeat.send(server)
    assert again.status == 200, again.body
    assert again.json() == {"execution_id": original, "status": "duplicate"}
    assert again.headers["x-execution-id"] == original
    entry = log_entry(server, again)
    assert (entry["status"], entry["reason"], entry["execution_id"]) == (200, "duplicate", original)
    other = signed(server, case, case.keys[0], uuid.uuid4().hex, n=1).send(server)
    assert other.status == 202 and other.json()["execution_id"] != original
    assert original in executions_of(server, case.key)


@pytest.mark.parametrize("case", [c for c in CASES if c.dedup_header or c.dedup_body], ids=str)
def test_concurrent_repeats_run_once(server, case):
    """Sixteen copies of one delivery at once (a sender's retry storm): one 202, fifteen duplicates
    naming it, one execution."""
    uid = uuid.uuid4().hex
    copies = [signed(server, case, case.keys[i % 2], uid, n=i) for i in range(16)]
    start = threading.Barrier(len(copies))

    def send(sent: Sent) -> Answer:
        start.wait()
        return sent.send(server)

    with ThreadPoolExecutor(len(copies)) as pool:
        answers = list(pool.map(send, copies))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 15 + [202], statuses
    original = next(a for a in answers if a.status == 202).json()["execution_id"]
    assert {a.json()["execution_id"] for a in answers} == {original}
    assert all(a.json()["status"] == "duplicate" for a in answers if a.status == 200)
    record = wait_for_execution(server, original)
    assert record["status"] == "resolved"


def test_signature_is_over_the_raw_bytes_of_a_gzip_body(server):
    raw = b'{"a":  1, "b": [1,2]}'
    packed = gzip.compress(raw)
    base = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    good = Sent("/t/github", {}, packed, {**base, "X-GitHub-Delivery": uuid.uuid4().hex,
                                          **sign_request("github", packed, GH[0].encode(), 0).headers})
    answer = good.send(server)
    assert answer.status == 202, answer.body
    assert wait_for_execution(server, answer.json()["execution_id"])["request"]["data"] == {"a": 1, "b": [1, 2]}
    # Signed over the decoded JSON instead: not what was sent.
    bad = Sent("/t/github", {}, packed, {**base, "X-GitHub-Delivery": uuid.uuid4().hex,
                                         **sign_request("github", raw, GH[0].encode(), 0).headers})
    _rejected(server, bad.send(server), BY_KEY["github"], bad, "invalid signature")


def test_signature_over_a_chunked_body(server):
    raw = orjson.dumps({"id": uuid.uuid4().hex, "chunked": True})
    signature = sign_request("github", raw, GH[1].encode(), 0).headers["X-Hub-Signature-256"]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (raw[:7], raw[7:20], raw[20:])) + b"0\r\n\r\n"
    head = ("POST /t/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-GitHub-Delivery: {uuid.uuid4().hex}\r\nX-Hub-Signature-256: {signature}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    reply = raw_exchange(server.host, server.port, head + chunks, read_until_close=True)
    assert reply.startswith(b"HTTP/1.1 202 "), reply[:200]
    execution_id = orjson.loads(reply.partition(b"\r\n\r\n")[2])["execution_id"]
    assert wait_for_execution(server, execution_id)["request"]["data"] == orjson.loads(raw)


def test_feishu_event_id_is_its_default_dedup_key(server):
    case = BY_KEY["feishu"]
    uid = uuid.uuid4().hex
    first = signed(server, case, case.keys[0], uid, n=1).send(server)
    assert first.status == 202
    again = signed(server, case, case.keys[1], uid, n=2).send(server)
    assert (again.status, again.json()) == (200, {"execution_id": first.json()["execution_id"],
                                                  "status": "duplicate"})


def test_repeat_of_a_delivery_with_a_bad_signature_is_401_not_duplicate(server):
    """Verification comes before dedup: a forger who knows a delivery id learns nothing."""
    case = BY_KEY["github"]
    uid = uuid.uuid4().hex
    first = signed(server, case, case.keys[0], uid).send(server)
    assert first.status == 202
    forged = signed(server, case, WRONG, uid)
    answer = forged.send(server)
    _rejected(server, answer, case, forged, "invalid signature")
    assert first.json()["execution_id"].encode() not in answer.body


def test_gitlab_event_uuid_is_the_dedup_key_without_idempotency_key(server):
    raw = b'{"object_kind": "push"}'
    uid = uuid.uuid4().hex
    headers = {"Content-Type": "application/json", "X-Gitlab-Event-UUID": uid, "X-Gitlab-Token": GL[0]}
    first = request(server, "POST", "/t/gitlab", raw, headers)
    assert first.status == 202
    again = request(server, "POST", "/t/gitlab", raw, {**headers, "X-Gitlab-Token": GL[1]})
    assert (again.status, again.json()) == (200, {"execution_id": first.json()["execution_id"],
                                                  "status": "duplicate"})


def test_standard_accepts_svix_headers_and_dedups_on_svix_id(server):
    case = BY_KEY["standard"]
    uid = "msg_" + uuid.uuid4().hex
    answers = []
    for key, n in ((STD[0], 1), (STD[1], 2)):
        sent = signed(server, case, key, uid, n=n)
        svix = {("svix-" + k[len("webhook-"):] if k.startswith("webhook-") else k): v
                for k, v in sent.headers.items()}
        answers.append(request(server, "POST", sent.target, sent.body, svix))
    assert answers[0].status == 202, answers[0].body
    assert (answers[1].status, answers[1].json()) == (200, {"execution_id": answers[0].json()["execution_id"],
                                                            "status": "duplicate"})
    record = wait_for_execution(server, answers[0].json()["execution_id"])
    assert record["request"]["headers"]["svix-signature"] == REDACTED
    assert record["dedup_key"] == uid


def test_twilio_public_url_matches_with_the_default_port_written_out(server):
    raw = _json_body(uuid.uuid4().hex, 1)
    headers = {"Content-Type": "application/json"}
    result = sign_request("twilio", raw, TWILIO[1].encode(), time.time(), headers=headers,
                          url="https://hooks.example.com:443/t/twilio-json")
    sent = Sent("/t/twilio-json", dict(result.query), raw, {**headers, **result.headers})
    answer = sent.send(server)
    assert answer.status == 202, answer.body


def test_wecom_dingtalk_style_json_envelope(server):
    raw = orjson.dumps({"EventType": "check_url", "n": 5})
    result = sign_request("wecom", raw, WECOM[0].encode(), time.time(),
                          {"encoding_aes_key": WECOM_AES, "corpid": WECOM_CORP},
                          headers={"Content-Type": "application/json"})
    assert result.body.startswith(b'{"encrypt":')
    answer = request(server, "POST", "/t/wecom-echo?" + urlencode(result.query), result.body,
                     {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    assert answer.json() == {"data": {"EventType": "check_url", "n": 5}, "ip": "127.0.0.1"}


def test_hmac_over_a_header_the_sender_changed_is_401(server):
    case = BY_KEY["hmac"]
    sent = signed(server, case, case.keys[0])
    sent.headers["X-Event"] = "order.deleted"
    _rejected(server, sent.send(server), case, sent, "invalid signature")


def test_twilio_signed_for_another_host_needs_public_url(server):
    """twilio-form trusts the Host header; a signature over the public URL only fits twilio-json."""
    case = BY_KEY["twilio-form"]
    moved = dataclasses.replace(case, public_url="https://hooks.example.com")
    sent = signed(server, moved, case.keys[0], path="/t/twilio-form")
    _rejected(server, sent.send(server), case, sent, "invalid signature")


def test_twilio_json_body_must_match_its_body_sha256(server):
    case = BY_KEY["twilio-json"]
    sent = signed(server, case, case.keys[0])
    tampered = Sent(sent.path, sent.query, sent.body.replace(b'"n":1', b'"n":9'), sent.headers)
    _rejected(server, tampered.send(server), case, tampered, "invalid signature", "bodySHA256")


# --- decrypted payloads are $context.data ----------------------------------------------------------

def test_wecom_decrypted_xml_is_context_data(server):
    case = BY_KEY["wecom"]
    uid = uuid.uuid4().hex
    sent = signed(server, case, case.keys[1], uid, path="/t/wecom-echo")
    assert b"<Encrypt>" in sent.body and uid.encode() not in sent.body
    answer = sent.send(server)
    assert answer.status == 200, answer.body
    assert answer.json() == {"data": _xml_body(uid, 1).decode(), "ip": "127.0.0.1"}


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plain"])
def test_feishu_payload_is_context_data(server, encrypt):
    uid = uuid.uuid4().hex
    raw = _feishu_body(uid, 3)
    result = sign_request("feishu", raw, FEISHU[0].encode(), time.time(), {}, encrypt=encrypt)
    assert (result.body != raw) is encrypt
    sent = Sent("/t/feishu-echo", {}, result.body, {"Content-Type": "application/json", **result.headers})
    answer = sent.send(server)
    assert answer.status == 200, answer.body
    assert answer.json() == {"data": orjson.loads(raw), "ip": "127.0.0.1"}
    # The async workflow stores the plaintext as the execution's request data.
    plain = Sent("/t/feishu", {}, result.body, sent.headers)
    accepted = plain.send(server)
    assert accepted.status == 202, accepted.body
    record = wait_for_execution(server, accepted.json()["execution_id"])
    assert record["status"] == "resolved"
    assert record["request"]["data"] == orjson.loads(raw)
    assert_secret_free(orjson.dumps(record))


def test_feishu_encrypted_body_signed_with_the_right_key_but_sealed_with_another_is_401(server):
    case = BY_KEY["feishu"]
    sealed = sign_request("feishu", _feishu_body("x", 1), b"some-other-key", time.time(), {})
    # Re-sign the foreign ciphertext with a configured key: the signature holds, decryption fails.
    resigned = sign_request("feishu", sealed.body, FEISHU[0].encode(), time.time(), {}, encrypt=False)
    sent = Sent("/t/feishu", {}, sealed.body, {"Content-Type": "application/json", **resigned.headers})
    _rejected(server, sent.send(server), case, sent, "undecryptable body")


# --- handshakes: answered, never run ------------------------------------------------------------

def _handshake_logged(running, answer: Answer, workflow: str) -> None:
    entry = log_entry(running, answer)
    assert (entry["workflow"], entry["reason"], entry["execution_id"]) == (workflow, "handshake", None)
    assert answer.headers.get("x-execution-id") is None


def test_slack_url_verification_is_answered_without_an_execution(server):
    case = BY_KEY["slack"]
    before = executions_of(server, "slack")
    raw = orjson.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3g",
                        "type": "url_verification"})
    result = sign_request("slack", raw, SLACK[1].encode(), time.time())
    sent = Sent("/t/slack", {}, raw, {"Content-Type": "application/json", **result.headers})
    answer = sent.send(server)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3g"}
    _handshake_logged(server, answer, "slack")
    # Unsigned or stale, the handshake is refused like any request.
    _rejected(server, sent.without("header", "X-Slack-Signature").send(server), case,
              sent, "missing signature header X-Slack-Signature")
    stale = sign_request("slack", raw, SLACK[0].encode(), time.time() - 3600)
    old = Sent("/t/slack", {}, raw, {"Content-Type": "application/json", **stale.headers})
    _rejected(server, old.send(server), case, old, "timestamp outside tolerance")
    assert executions_of(server, "slack") == before


def test_feishu_url_verification_plain_and_encrypted(server):
    before = executions_of(server, "feishu")
    raw = orjson.dumps({"challenge": "ajls384kdjx98XX", "token": "xxxxxx", "type": "url_verification"})
    plain = request(server, "POST", "/t/feishu", raw, {"Content-Type": "application/json"})
    assert (plain.status, plain.json()) == (200, {"challenge": "ajls384kdjx98XX"})
    _handshake_logged(server, plain, "feishu")
    for key in FEISHU:  # either rotated key; Feishu signs it, and the signature is checked
        sealed = sign_request("feishu", raw, key.encode(), time.time(), {})
        assert b"ajls384kdjx98XX" not in sealed.body
        answer = request(server, "POST", "/t/feishu", sealed.body,
                         {"Content-Type": "application/json", **sealed.headers})
        assert (answer.status, answer.json()) == (200, {"challenge": "ajls384kdjx98XX"})
        _handshake_logged(server, answer, "feishu")
    # Encrypted but unsigned (Feishu's first contact): decrypted with the configured keys.
    sealed = sign_request("feishu", raw, FEISHU[1].encode(), time.time(), {})
    unsigned = request(server, "POST", "/t/feishu", sealed.body, {"Content-Type": "application/json"})
    assert (unsigned.status, unsigned.json()) == (200, {"challenge": "ajls384kdjx98XX"})
    # Sealed with a key the server does not hold: no handshake, and no way in.
    foreign = sign_request("feishu", raw, b"not-our-key", time.time(), {})
    refused = request(server, "POST", "/t/feishu", foreign.body, {"Content-Type": "application/json",
                                                                  **foreign.headers})
    assert refused.status == 401
    assert executions_of(server, "feishu") == before


def test_feishu_url_verification_checks_the_verification_token(server):
    good = orjson.dumps({"challenge": "c-123", "token": FEISHU_TOKEN, "type": "url_verification"})
    answer = request(server, "POST", "/t/feishu-token", good, {"Content-Type": "application/json"})
    assert (answer.status, answer.json()) == (200, {"challenge": "c-123"})
    _handshake_logged(server, answer, "feishu-token")
    bad = orjson.dumps({"challenge": "c-123", "token": "guess", "type": "url_verification"})
    refused = request(server, "POST", "/t/feishu-token", bad, {"Content-Type": "application/json"})
    assert refused.status == 401
    entry = log_entry(server, refused)
    assert "invalid verification token" in entry["reason"] and "scheme=feishu" in entry["reason"]
    assert_secret_free(refused.body)
    assert_secret_free(orjson.dumps(entry))
    assert executions_of(server, "feishu-token") == set()


def test_meta_hub_challenge(server):
    query = {"hub.mode": "subscribe", "hub.verify_token": META_TOKEN, "hub.challenge": "1158201444"}
    answer = request(server, "GET", "/t/meta?" + urlencode(query))
    assert (answer.status, answer.body) == (200, b"1158201444")
    assert answer.headers["content-type"].startswith("text/plain")
    _handshake_logged(server, answer, "meta")
    wrong = request(server, "GET", "/t/meta?" + urlencode({**query, "hub.verify_token": "guess"}))
    assert wrong.status in (401, 403)
    entry = log_entry(server, wrong)
    assert "invalid verify token" in entry["reason"] and "hub.verify_token" in entry["reason"]
    assert entry["path"] == "/t/meta"
    missing = request(server, "GET", "/t/meta?" + urlencode({"hub.mode": "subscribe", "hub.challenge": "1"}))
    assert missing.status in (401, 403)
    assert "missing query parameter hub.verify_token" in log_entry(server, missing)["reason"]
    for refused in (wrong, missing):
        assert b"1158201444" not in refused.body
        assert_secret_free(refused.body)
    # Its POSTs are GitHub-signed like any other.
    raw = b'{"object": "page", "entry": []}'
    signed_post = sign_request("github", raw, GH[1].encode(), time.time())
    accepted = request(server, "POST", "/t/meta", raw, {"Content-Type": "application/json", **signed_post.headers})
    assert accepted.status == 202
    assert executions_of(server, "meta") == {accepted.json()["execution_id"]}


def test_wecom_echostr_vector(server, request_vectors):
    vector = request_vectors["wecom"]
    answer = request(server, "GET", "/t/wecom-vector?" + urlencode(vector["query"]))
    assert answer.status == 200, answer.body
    assert answer.body == vector["echostr_plaintext"].encode()
    _handshake_logged(server, answer, "wecom-vector")
    forged = {**vector["query"], "msg_signature": "0" * 40}
    refused = request(server, "GET", "/t/wecom-vector?" + urlencode(forged))
    assert refused.status == 401
    assert vector["echostr_plaintext"].encode() not in refused.body
    assert "invalid signature" in log_entry(server, refused)["reason"]
    assert executions_of(server, "wecom-vector") == set()


def test_wecom_echostr_generated_with_a_rotated_token(server):
    before = executions_of(server, "wecom")
    result = sign_request("wecom", b"echo-5513297", WECOM[1].encode(), time.time(),
                          {"encoding_aes_key": WECOM_AES, "corpid": WECOM_CORP}, method="GET")
    answer = request(server, "GET", "/t/wecom?" + urlencode(result.query))
    assert (answer.status, answer.body) == (200, b"echo-5513297")
    _handshake_logged(server, answer, "wecom")
    assert executions_of(server, "wecom") == before


@pytest.fixture(scope="module")
def request_vectors():
    return orjson.loads((Path(__file__).parents[1] / "data" / "signatures.json").read_bytes())


# --- nothing secret anywhere, after all of the above ----------------------------------------------

def test_no_secret_in_the_request_log_executions_or_metrics(server):
    for case in CASES:  # some traffic of every kind, so this holds when run alone too
        assert signed(server, case, case.keys[1]).send(server).status == 202
        assert signed(server, case, case.wrong).send(server).status == 401
        for where, name, _ in case.drops:
            assert signed(server, case, case.keys[0]).without(where, name).send(server).status == 401
    service = server.server.service
    server.call(service.drain)
    log = admin(server, "/requests?limit=1000")
    assert len(log.json()["items"]) >= 2 * len(CASES)
    assert_secret_free(log.body)
    executions = admin(server, "/executions?limit=1000")
    assert len(executions.json()["items"]) >= len(CASES)
    assert_secret_free(executions.body)
    for item in executions.json()["items"]:
        assert_secret_free(admin(server, f"/executions/{item['id']}").body)
    metrics = request(server, "GET", "/metrics")
    assert metrics.status == 200
    assert_secret_free(metrics.body)
    for case in CASES:
        line = re.search(rb'^fastwebhook_rejected_total\{reason="signature",workflow="%s"\} (\S+)$'
                         % case.key.encode(), metrics.body, re.M)
        assert line and float(line[1]) >= 1 + len(case.drops), case.key
