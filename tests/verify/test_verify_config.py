"""Configuration errors of every scheme name their TOML path and never echo a secret."""

from __future__ import annotations

import pytest

from fastwebhook.core.errors import ConfigError
from fastwebhook.verify import SCHEMES, Scheme, build_verifier

SECRET = b"generic-secret"

P = "workflows.orders.verify"


@pytest.mark.parametrize("scheme, options, secrets, path, fragment", [
    ("hmac", {}, (SECRET,), P + ".header", "needs the signature header"),
    ("hmac", {"header": 5}, (SECRET,), P + ".header", "must be a string"),
    ("hmac", {"header": "X", "algorithm": "md5"}, (SECRET,), P + ".algorithm", "sha1, sha256"),
    ("hmac", {"header": "X", "encoding": "b32"}, (SECRET,), P + ".encoding", "hex, base64"),
    ("hmac", {"header": "X", "algoritm": "sha1"}, (SECRET,), P + ".algoritm", "unknown option"),
    ("hmac", {"header": "X", "timestamp_header": "T", "tolerance": "5 parsecs"}, (SECRET,),
     P + ".tolerance", "not a duration"),
    ("hmac", {"header": "X", "timestamp_header": "T", "tolerance": "0s"}, (SECRET,),
     P + ".tolerance", "more than zero"),
    ("hmac", {"header": "X", "tolerance": "5m"}, (SECRET,), P + ".tolerance",
     "needs timestamp_header"),
    ("hmac", {"header": "X", "signed": "{timestamp}.{body}"}, (SECRET,), P + ".signed",
     "needs timestamp_header"),
    ("hmac", {"header": "X", "timestamp_header": "T", "signed": "{body}"}, (SECRET,),
     P + ".signed", "must include {timestamp}"),
    ("hmac", {"header": "X", "signed": "{id}.{body}"}, (SECRET,), P + ".signed",
     "unknown placeholder {id}"),
    ("hmac", {"header": "X", "signed": "{header:}.{body}"}, (SECRET,), P + ".signed",
     "unknown placeholder"),
    ("hmac", {"header": "X", "signed": "{body"}, (SECRET,), P + ".signed", "unbalanced"),
    ("hmac", {"header": "X", "signed": "static"}, (SECRET,), P + ".signed",
     "must include {body}"),
    ("hmac", {"header": "X"}, (), P + ".secret", "needs a secret"),
    ("github", {}, (), P + ".secret", "needs a secret"),
    ("github", {}, (b"ok", b""), P + ".secrets[1]", "non-empty"),
    ("github", {"header": "X-Other"}, (SECRET,), P + ".header", "unknown option"),
    ("none", {}, (SECRET,), P + ".secret", "checks nothing"),
    ("none", {"header": "X"}, (), P + ".header", "unknown option"),
    ("github", {"verify_token": ""}, (SECRET,), P + ".verify_token", "must not be empty"),
    ("gitlab", {"tolerance": "5m"}, (SECRET,), P + ".tolerance", "unknown option"),
    ("stripe", {"tolerance": "0s"}, (SECRET,), P + ".tolerance", "more than zero"),
    ("slack", {"tolerance": "soon"}, (SECRET,), P + ".tolerance", "not a duration"),
    ("shopify", {}, (), P + ".secret", "needs a secret"),
    ("twilio", {"public_url": "https://x"}, (SECRET,), P + ".public_url", "unknown option"),
    ("standard", {}, (b"whsec_not base64!",), P + ".secret", "not a Standard Webhooks key"),
    ("standard", {}, (b"whsec_AAAA", b"whpk_AAAA"), P + ".secrets[1]", "32-byte ed25519"),
    ("standard", {}, (b"whsk_" + b"A" * 43 + b"=",), P + ".secret", "whpk_ public key"),
    ("wecom", {"token": "t"}, (), P + ".encoding_aes_key", "needs encoding_aes_key"),
    ("wecom", {"token": "t", "encoding_aes_key": "short"}, (), P + ".encoding_aes_key",
     "43-character"),
    ("wecom", {"encoding_aes_key": "A" * 43}, (), P + ".token", "needs token"),
    ("wecom", {"token": "t", "encoding_aes_key": "A" * 43, "corpid": "a", "receive_id": "b"}, (),
     P + ".receive_id", "give one"),
    ("feishu", {}, (), P + ".encrypt_key", "needs encrypt_key"),
    ("feishu", {"token": ""}, (SECRET,), P + ".token", "must not be empty"),
    ("token", {}, (SECRET,), P + ".header", "exactly one of header or query"),
    ("token", {"header": "X", "query": "q"}, (SECRET,), P + ".header", "exactly one"),
    ("token", {"query": "q", "prefix": "Bearer "}, (SECRET,), P + ".prefix", "header token"),
    ("token", {"header": "X"}, (), P + ".secret", "needs a secret"),
    ("basic", {"password": "p"}, (), P + ".username", "needs a username"),
    ("basic", {"username": "a:b", "password": "p"}, (), P + ".username", "without ':'"),
    ("basic", {"username": "u"}, (), P + ".password", "needs password"),
    ("basic", {"username": "u", "password": "p", "realm": 'a"b'}, (), P + ".realm", "quotes"),
    ("gitlub", {}, (SECRET,), P + ".scheme", "unknown verification scheme 'gitlub' "
                                             "(known: basic, feishu, github, gitlab, hmac, none, "
                                             "shopify, slack, standard, stripe, token, twilio, "
                                             "wecom)"),
])
def test_config_errors_name_their_path(scheme, options, secrets, path, fragment):
    with pytest.raises(ConfigError) as caught:
        build_verifier(scheme, options, secrets, P)
    assert caught.value.path == path
    assert fragment in caught.value.message
    assert str(caught.value).startswith(path + ": ")


def test_loader_keys_in_options_are_ignored():
    table = {"scheme": "github", "secret": "x", "secrets": ["x"], "secret_file": "/f"}
    build_verifier("github", table, (SECRET,), P)


def test_registry_entries_are_consistent():
    for name, scheme in SCHEMES.items():
        assert isinstance(scheme, Scheme) and scheme.name == name
