"""Request bodies: undo Content-Encoding within the size limit, then parse into `$context.data`.

Pure functions on bytes; every refusal is a `RequestError` that says what was wrong and, where the
parser knows it, at which byte.
"""

import base64
import hashlib
import logging
import re
import zlib
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ..core.errors import RequestError

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
# Senders write one gzip member, or a few when they concatenate streams (bgzip: one per 64 KiB);
# each member costs a decompressor, so thousands of empty ones in a body are only work for us.
MAX_GZIP_MEMBERS = 64
_FIRST_FEED = 256  # input handed to zlib in a member's first call; doubled on each further call

# A quoted parameter value may itself hold ";" (RFC 9110 quoted-string), so split with a regex
# rather than str.split.
_PARAM = re.compile(r';\s*([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")

# python-multipart logs a warning for every malformed body; senders control that, so it would let
# anyone write to our log at will. The RequestError we raise is what gets recorded.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)


def decode_content(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, x-gzip, deflate) up to ``limit`` decoded bytes.

    Decompression is asked for at most ``limit + 1`` bytes, so a zip bomb costs at most that
    much memory before it is refused with 413; a gzip body of more than ``MAX_GZIP_MEMBERS``
    members is refused with 400. Stacked codings ("gzip, deflate") are refused with
    415: no webhook sender uses them, and each extra layer would multiply the decompression work
    an attacker can ask for.
    """
    if not content_encoding:
        return raw
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding in ("gzip", "x-gzip"):
        return _inflate(raw, _GZIP_WBITS, limit, coding)
    if coding == "deflate":
        # RFC 9110 says zlib-wrapped, but some senders emit raw deflate; a zlib stream is
        # recognisable by its two-byte header (CM=8 and a checksum divisible by 31).
        wrapped = len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
        return _inflate(raw, _ZLIB_WBITS if wrapped else _RAW_DEFLATE_WBITS, limit, coding)
    raise RequestError(f"unsupported Content-Encoding: {content_encoding.strip()}",
                       status=415, reason="media_type")


def _inflate(data: bytes, wbits: int, limit: int, coding: str) -> bytes:
    # zlib copies what follows a stream's end into `unused_data`: handed the whole rest of the
    # body for every gzip member, it would copy that rest once per member (quadratic in the
    # member count). So each member gets slices of a memoryview that start small and double:
    # what is copied at its end is then at most about what the member itself took.
    view = memoryview(data)
    chunks = []
    size = offset = members = 0
    while True:  # gzip allows several members one after another (RFC 1952 2.2)
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise RequestError(f"invalid {coding} body: more than {MAX_GZIP_MEMBERS} members")
        stream = zlib.decompressobj(wbits)
        feed = _FIRST_FEED
        while not stream.eof and offset < len(data):
            piece = view[offset:offset + feed]
            try:
                chunk = stream.decompress(piece, limit - size + 1)
            except zlib.error as e:
                raise RequestError(f"invalid {coding} body: {e}") from None
            size += len(chunk)
            if size > limit:
                raise RequestError(f"decoded body exceeds {limit} bytes", status=413, reason="size")
            # Below the output cap zlib takes the whole piece, or stops at the stream's end.
            chunks.append(chunk)
            offset += len(piece) - len(stream.unused_data)
            feed *= 2
        if not stream.eof:
            raise RequestError(f"invalid {coding} body: truncated, the stream ends early")
        # Bytes after a deflate stream have no meaning; tolerate them as zlib itself does.
        if offset == len(data) or wbits != _GZIP_WBITS:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``("application/json", {"charset": "utf-8"})`` from a Content-Type header value.

    The type and parameter names are lower-cased; values are not (a boundary is case-sensitive).
    """
    if not content_type:
        return "", {}
    if ";" not in content_type:  # the common case: no parameters, no regex
        return content_type.strip().lower(), {}
    head, _, rest = content_type.partition(";")
    params = {}
    for name, value in _PARAM.findall(";" + rest):
        if value[:1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.lower()] = value.strip()
    return head.strip().lower(), params


def accepts(content_type: str | None, allowed: frozenset[str]) -> bool:
    """Whether a workflow's ``content_types`` (lower-case media types; empty = all) admit it."""
    return not allowed or media_type(content_type)[0] in allowed


def raw_text(raw: bytes) -> str:
    """``$context.raw``: the body as UTF-8 text, or as base64 when it is not UTF-8."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """``$context.data`` for an already decoded body; 400 if it does not parse as its type says."""
    if not raw:
        return None
    # Parameters matter only to forms; JSON, the common case, skips parsing them.
    mtype = content_type.partition(";")[0].strip().lower() if content_type else ""
    if mtype == "application/json" or mtype.endswith("+json"):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise RequestError(f"invalid JSON body: {e}") from None
    if mtype == "application/x-www-form-urlencoded":
        return _parse_form(raw, media_type(content_type)[1].get("charset") or "utf-8")
    if mtype == "multipart/form-data":
        return _parse_multipart(raw, media_type(content_type)[1].get("boundary"))
    return raw_text(raw)


def _add(fields: dict[str, Any], name: str, value: Any) -> None:
    # Field values are never lists themselves, so a list always means "repeated".
    old = fields.get(name, fields)
    if old is fields:
        fields[name] = value
    elif isinstance(old, list):
        old.append(value)
    else:
        fields[name] = [old, value]


def _parse_form(raw: bytes, charset: str) -> dict[str, Any]:
    bad = _BAD_PERCENT.search(raw)
    if bad:
        raise RequestError(f"invalid form body: bad percent-escape at byte {bad.start()}")
    fields: dict[str, Any] = {}
    for number, pair in enumerate(raw.split(b"&"), 1):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        try:
            _add(fields, _form_unquote(name, charset), _form_unquote(value, charset))
        # ValueError covers UnicodeError; LookupError an unknown or non-text charset.
        except (ValueError, LookupError) as e:
            raise RequestError(f"invalid form body: field {number} does not decode as "
                               f"{charset}: {e}") from None
    return fields


def _form_unquote(data: bytes, charset: str) -> str:
    if b"%" in data or b"+" in data:
        data = unquote_to_bytes(data.replace(b"+", b" "))
    return data.decode(charset)


def _parse_multipart(raw: bytes, boundary: str | None) -> dict[str, Any]:
    if not boundary:
        raise RequestError("invalid multipart body: Content-Type has no boundary")
    fields: dict[str, Any] = {}
    headers: dict[bytes, bytes] = {}
    header_name: list[bytes] = []
    header_value: list[bytes] = []
    chunks: list[bytes] = []
    parts = 0
    ended = False

    def on_part_begin() -> None:
        nonlocal parts
        parts += 1
        headers.clear()
        chunks.clear()

    def on_header_end() -> None:
        headers[b"".join(header_name).strip().lower()] = b"".join(header_value).strip()
        header_name.clear()
        header_value.clear()

    def on_part_end() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition"))
        name = options.get(b"name")
        if name is None:
            raise RequestError(f"invalid multipart body: part {parts} has no name")
        data = b"".join(chunks)
        filename = options.get(b"filename")
        if filename is None:
            value: Any = raw_text(data)
        else:
            value = {
                "filename": filename.decode("utf-8", "replace"),
                # RFC 7578 4.4: a part without a Content-Type is text/plain.
                "content_type": headers.get(b"content-type", b"text/plain").decode("latin-1"),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "base64": base64.b64encode(data).decode("ascii"),
            }
        _add(fields, name.decode("utf-8", "replace"), value)

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": lambda data, start, end: chunks.append(data[start:end]),
        "on_part_end": on_part_end,
        "on_header_field": lambda data, start, end: header_name.append(data[start:end]),
        "on_header_value": lambda data, start, end: header_value.append(data[start:end]),
        "on_header_end": on_header_end,
        "on_end": on_end,
    }
    try:
        MultipartParser(boundary.encode("latin-1"), callbacks).write(raw)
    except FormParserError as e:  # its messages already name the offending byte's index
        raise RequestError(f"invalid multipart body: {e}") from None
    except UnicodeEncodeError:
        raise RequestError("invalid multipart body: boundary is not latin-1") from None
    if not ended:
        raise RequestError("invalid multipart body: truncated, no closing boundary")
    return fields
