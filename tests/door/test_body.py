import base64
import gzip
import hashlib
import http.client
import os
import socket
import time
import tracemalloc
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_support import request
from fastwebhook.door.body import (MAX_GZIP_MEMBERS, accepts, decode_content, media_type, parse_body,
                                   raw_text)
from fastwebhook.core.errors import RequestError

MiB = 1024 * 1024


def refused(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args)
    return info.value


# --- media types ---

def test_media_type_plain_and_with_params():
    assert media_type("application/json") == ("application/json", {})
    assert media_type(" Application/JSON ") == ("application/json", {})
    assert media_type(None) == ("", {})
    assert media_type('multipart/form-data; Boundary="a;b\\"c"; charset=UTF-8') == (
        "multipart/form-data", {"boundary": 'a;b"c', "charset": "UTF-8"})


def test_accepts_compares_media_types_only():
    allowed = frozenset({"application/json"})
    assert accepts("application/json; charset=utf-8", allowed)
    assert accepts("APPLICATION/JSON", allowed)
    assert not accepts("text/plain", allowed)
    assert not accepts(None, allowed)
    assert accepts("anything/at-all", frozenset())


# --- JSON ---

def test_json():
    assert parse_body(b'{"a": [1, 2], "b": null}', "application/json") == {"a": [1, 2], "b": None}
    assert parse_body(b"[1]", "application/json; charset=utf-8") == [1]


def test_json_suffix_types():
    assert parse_body(b'{"x": 1}', "application/vnd.github+json") == {"x": 1}
    assert parse_body(b'{"x": 1}', "application/cloudevents+json") == {"x": 1}


def test_empty_body_is_none_whatever_the_type():
    for ctype in ("application/json", "text/plain", "multipart/form-data", None):
        assert parse_body(b"", ctype) is None


def test_invalid_json_says_where():
    err = refused(parse_body, b'{"a": 1,\n "b": x}', "application/json")
    assert err.status == 400 and err.reason == "malformed"
    assert err.message.startswith("invalid JSON body: ")
    assert "line 2" in err.message and "column" in err.message and "char" in err.message


# --- urlencoded forms ---

def test_form_repeated_and_blank_fields():
    body = b"a=1&b=&a=2&c&a=3&name=J%C3%B6rg+M&&"
    assert parse_body(body, "application/x-www-form-urlencoded") == {
        "a": ["1", "2", "3"], "b": "", "c": "", "name": "Jörg M"}


def test_form_charset():
    ctype = "application/x-www-form-urlencoded; charset=ISO-8859-1"
    assert parse_body(b"name=J%F6rg", ctype) == {"name": "Jörg"}


def test_form_undecodable_and_bad_escape():
    err = refused(parse_body, b"ok=1&name=J%F6rg", "application/x-www-form-urlencoded")
    assert err.status == 400 and err.message.startswith("invalid form body: field 2")
    err = refused(parse_body, b"a=1&b=%zz", "application/x-www-form-urlencoded")
    assert err.message == "invalid form body: bad percent-escape at byte 6"
    err = refused(parse_body, b"a=1", "application/x-www-form-urlencoded; charset=nope")
    assert err.message.startswith("invalid form body:")


# --- multipart ---

FILE_BYTES = bytes(range(256)) * 3


def multipart(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for disposition, data in parts:
        out += f"--{boundary}\r\n{disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_multipart_fields_repeats_and_file():
    body = multipart("XyZ", [
        ('Content-Disposition: form-data; name="title"', b"hello"),
        ('Content-Disposition: form-data; name="tag"', b"a"),
        ('Content-Disposition: form-data; name="tag"', b"b"),
        ('Content-Disposition: form-data; name="upload"; filename="blob.bin"\r\n'
         "Content-Type: application/octet-stream", FILE_BYTES),
    ])
    data = parse_body(body, "multipart/form-data; boundary=XyZ")
    assert data["title"] == "hello"
    assert data["tag"] == ["a", "b"]
    assert data["upload"] == {
        "filename": "blob.bin",
        "content_type": "application/octet-stream",
        "size": len(FILE_BYTES),
        "sha256": hashlib.sha256(FILE_BYTES).hexdigest(),
        "base64": base64.b64encode(FILE_BYTES).decode(),
    }


def test_multipart_boundary_is_quoted_and_case_sensitive():
    body = multipart("AbC", [('Content-Disposition: form-data; name="x"', b"1")])
    assert parse_body(body, 'multipart/form-data; boundary="AbC"') == {"x": "1"}
    assert refused(parse_body, body, "multipart/form-data; boundary=abc").status == 400


@pytest.mark.parametrize("body, ctype", [
    (b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--X--",
     "multipart/form-data"),                                        # no boundary
    (b"this is not multipart at all", "multipart/form-data; boundary=X"),
    (b"--X\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
     "multipart/form-data; boundary=X"),                            # no closing boundary
    (b"--X\r\nContent-Type: text/plain\r\n\r\n1\r\n--X--\r\n",
     "multipart/form-data; boundary=X"),                            # part without a name
    (b"--X\r\nbroken header line\r\n\r\n1\r\n--X--\r\n", "multipart/form-data; boundary=X"),
])
def test_malformed_multipart(body, ctype):
    err = refused(parse_body, body, ctype)
    assert err.status == 400
    assert err.message.startswith("invalid multipart body")


# --- text and everything else ---

def test_text_xml_and_unknown_types_are_strings():
    assert parse_body("héllo".encode(), "text/plain; charset=utf-8") == "héllo"
    assert parse_body(b"<a>1</a>", "application/xml") == "<a>1</a>"
    assert parse_body(b"<a>1</a>", "application/atom+xml") == "<a>1</a>"
    assert parse_body(b"plain", None) == "plain"


def test_binary_becomes_base64():
    blob = b"\xff\xfe\x00\x80binary"
    assert parse_body(blob, "application/octet-stream") == base64.b64encode(blob).decode()
    assert parse_body(blob, None) == base64.b64encode(blob).decode()
    assert raw_text(blob) == base64.b64encode(blob).decode()
    assert raw_text("ok ✓".encode()) == "ok ✓"


# --- Content-Encoding ---

PAYLOAD = b'{"event": "push", "n": %d}' % 12345 * 50


def test_identity_returns_the_same_object():
    for coding in (None, "", "identity", " Identity "):
        assert decode_content(PAYLOAD, coding, MiB) is PAYLOAD


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("GZIP", gzip.compress),
    ("deflate", zlib.compress),                                   # zlib-wrapped, per the RFC
    ("deflate", lambda b: zlib.compress(b)[2:-4]),                # raw deflate, as some send it
])
def test_round_trip(coding, encode):
    assert decode_content(encode(PAYLOAD), coding, MiB) == PAYLOAD


def test_multi_member_gzip():
    # RFC 1952 2.2: a gzip file is a series of members; an empty one decodes to nothing.
    assert decode_content(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", MiB) == b"abcd"
    three = gzip.compress(b"ab") + gzip.compress(b"") + gzip.compress(b"cd")
    assert decode_content(three, "gzip", MiB) == b"abcd"


def test_members_larger_than_one_read_of_the_input():
    big = os.urandom(300 * 1024)  # incompressible: the member is as large as its content
    body = gzip.compress(b"head") + gzip.compress(big) + gzip.compress(b"tail")
    assert decode_content(body, "gzip", MiB) == b"head" + big + b"tail"
    err = refused(decode_content, body[:-30], "gzip", MiB)  # cut in the large member's trailer
    assert err.status == 400
    assert err.message == "invalid gzip body: truncated, the stream ends early"


EMPTY_MEMBER = gzip.compress(b"", mtime=0)  # 20 bytes: ~52,000 of them fit in 1 MiB


def test_gzip_member_count_is_bounded():
    assert MAX_GZIP_MEMBERS == 64
    most = gzip.compress(b"x") * MAX_GZIP_MEMBERS
    assert decode_content(most, "gzip", MiB) == b"x" * MAX_GZIP_MEMBERS
    for count in (MAX_GZIP_MEMBERS + 1, MiB // len(EMPTY_MEMBER)):
        err = refused(decode_content, EMPTY_MEMBER * count, "gzip", MiB)
        assert err.status == 400 and err.reason == "malformed"
        assert err.message == "invalid gzip body: more than 64 members"


def test_limit_is_inclusive():
    assert decode_content(gzip.compress(b"x" * 100), "gzip", 100) == b"x" * 100
    err = refused(decode_content, gzip.compress(b"x" * 101), "gzip", 100)
    assert err.status == 413 and err.reason == "size"
    assert err.message == "decoded body exceeds 100 bytes"
    # The limit holds across gzip members too.
    assert refused(decode_content, gzip.compress(b"x" * 60) * 2, "gzip", 100).status == 413


def test_zip_bomb_is_refused_quickly_and_cheaply():
    bomb = gzip.compress(bytes(50 * MiB), compresslevel=9)
    assert len(bomb) < 100 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    try:
        err = refused(decode_content, bomb, "gzip", MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.status == 413 and err.message == "decoded body exceeds 1048576 bytes"
    assert time.perf_counter() - started < 0.5
    assert peak < 4 * MiB


@pytest.mark.parametrize("raw, coding", [
    (b"definitely not gzip", "gzip"),
    (gzip.compress(PAYLOAD)[:-20], "gzip"),                       # truncated
    (gzip.compress(PAYLOAD) + b"trailing junk", "gzip"),
    (b"\x78\x9c garbage after a zlib header", "deflate"),
], ids=["not-gzip", "truncated-gzip", "gzip-then-junk", "deflate-garbage"])   # (gzip's header holds the time)
def test_corrupt_encoding(raw, coding):
    err = refused(decode_content, raw, coding, MiB)
    assert err.status == 400 and err.reason == "malformed"
    assert err.message.startswith(f"invalid {coding} body: ")


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, deflate"])
def test_unsupported_encoding(coding):
    err = refused(decode_content, b"x", coding, MiB)
    assert err.status == 415 and err.reason == "media_type"
    assert err.message == f"unsupported Content-Encoding: {coding}"


# --- nothing but RequestError escapes, whatever the bytes ---

CONTENT_TYPES = [
    None, "application/json", "application/vnd.api+json",
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "application/x-www-form-urlencoded; charset=utf-16",
    "multipart/form-data", "multipart/form-data; boundary=X", "multipart/form-data; boundary=\"\"",
    "text/plain", "application/xml", "application/octet-stream",
]


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(
    st.binary(max_size=512),
    st.lists(st.sampled_from([b"--X", b"\r\n", b"--", b"Content-Disposition: form-data",
                              b'; name="a"', b"; filename=\"f\"", b"%", b"=", b"&", b"{", b"\xff",
                              b"Content-Type: x"]), max_size=30).map(b"".join),
), content_type=st.sampled_from(CONTENT_TYPES))
def test_parse_body_only_raises_request_error(raw, content_type):
    try:
        parse_body(raw, content_type)
    except RequestError as e:
        assert e.status == 400


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=256), coding=st.sampled_from(["gzip", "deflate", "br", None]))
def test_decode_content_only_raises_request_error(raw, coding):
    try:
        assert len(decode_content(raw, coding, 1024)) <= 1024 or coding is None
    except RequestError as e:
        assert e.status in (400, 413, 415)


def test_multipart_nameless_part_is_counted_in_order():
    body = multipart("X", [('Content-Disposition: form-data; name="a"', b"1"),
                           ('Content-Disposition: form-data; name="a"', b"2"),
                           ("Content-Disposition: form-data", b"3")])
    err = refused(parse_body, body, "multipart/form-data; boundary=X")
    assert err.message == "invalid multipart body: part 3 has no name"


# --- through the real server ---

@pytest.mark.alone   # /healthz's wait is timed by the clock
def test_many_gzip_members_are_refused_without_holding_up_the_loop(serve):
    server = serve('[workflows.plain]\npath = "/plain"\n')
    body = EMPTY_MEMBER * (MiB // len(EMPTY_MEMBER))
    head = (b"POST /plain HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(head + body)
        # The loop has the whole body or is about to: a /healthz now must not queue behind it.
        started = time.perf_counter()
        assert request(server, "GET", "/healthz").status == 200
        healthz_took = time.perf_counter() - started
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 400
        assert orjson.loads(answer.read()) == {"error": "invalid gzip body: more than 64 members"}
    assert healthz_took < 0.3, f"/healthz waited {healthz_took:.2f} s"
