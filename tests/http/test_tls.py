"""HTTPS (SPEC section 3, `[server] tls_cert` / `tls_key`): the real server over real TLS, with
certificates made at test time by trustme; config errors; the certificate re-read on SIGHUP."""

from __future__ import annotations

import hashlib
import http.client
import signal
import socket
import ssl
import warnings
from pathlib import Path

import orjson
import pytest
import trustme

from cli_support import fastwebhook
from conftest import log_entries, spawn_server, wait_for_entry, write_config
from fastwebhook.config.loader import load_config
from fastwebhook.core.errors import ConfigErrors

HOST = "127.0.0.1"
WORKFLOW = """
[workflows.hook]
path = "/hook"
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A fresh leaf certificate for 127.0.0.1 (chain PEM, key PEM) written into ``folder``."""
    leaf = ca.issue_cert(HOST, "localhost")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def tls_config(cert: Path, key: Path, extra: str = WORKFLOW) -> str:
    return f"""
[server]
listen = ["{HOST}:0"]
tls_cert = "{cert}"
tls_key = "{key}"
[storage]
url = "sqlite:///{{db}}"
[log]
level = "info"
{extra}"""


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def https_post(port: int, context: ssl.SSLContext, body: bytes = b'{"n": 1}') -> tuple[int, dict]:
    connection = http.client.HTTPSConnection(HOST, port, context=context, timeout=10)
    try:
        connection.request("POST", "/hook", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def peer_fingerprint(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def fingerprint(cert: Path) -> str:
    first = cert.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


@pytest.fixture
def https_server(serve, ca, tmp_path):
    cert, key = write_pair(ca, tmp_path)
    return serve(tls_config(cert, key))


# --- serving ----------------------------------------------------------------------------------

def test_https_post_is_accepted(https_server, ca):
    assert https_server.server.tls_enabled
    status, body = https_post(https_server.port, client_context(ca))
    assert status == 202
    assert body["status"] == "queued"


def test_plain_config_serves_http_and_says_so(serve):
    running = serve(WORKFLOW)
    assert not running.server.tls_enabled
    assert running.server.ssl_context is None


def test_the_server_speaks_tls_1_2_and_1_3_only_with_aead_suites(https_server, ca):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = client_context(ca)
        context.minimum_version = context.maximum_version = version
        with socket.create_connection((HOST, https_server.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                name, protocol, _ = tls.cipher()
                assert protocol == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
                assert "GCM" in name or "CHACHA20" in name
                assert tls.compression() is None
                assert tls.selected_alpn_protocol() in (None, "http/1.1")


def test_a_tls_1_2_client_offering_only_cbc_suites_is_refused(https_server, ca):
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA")
    with socket.create_connection((HOST, https_server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname=HOST)
    assert https_post(https_server.port, client_context(ca))[0] == 202


def test_a_tls_1_1_client_is_refused_at_handshake(https_server, ca):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1* are deprecated
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
            # OpenSSL 3 refuses TLS < 1.2 at security level 1 and above, on either side.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"the local OpenSSL cannot build a TLS 1.0/1.1-only client: {exc}")
    ca.configure_trust(context)
    with socket.create_connection((HOST, https_server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as info:
            context.wrap_socket(raw, server_hostname=HOST)
    if info.value.reason == "NO_PROTOCOLS_AVAILABLE":
        pytest.skip(f"the local OpenSSL will not offer TLS 1.0/1.1 at all: {info.value}")
    # The server's refusal (an alert, or with uvloop a close mid-handshake), not a local failure:
    assert info.value.reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL",
                                 "UNEXPECTED_EOF_WHILE_READING"), info.value
    # ... for the very same client, allowed TLS 1.2 too, gets through.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((HOST, https_server.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.version() == "TLSv1.2"
    assert https_post(https_server.port, client_context(ca))[0] == 202


def test_plain_http_to_the_https_port_gets_no_2xx_and_the_server_lives_on(https_server, ca):
    request = b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection((HOST, https_server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert not received.startswith(b"HTTP/1.1 2")
    assert not received.startswith(b"HTTP/1.0 2")
    assert https_post(https_server.port, client_context(ca))[0] == 202


def test_a_client_that_never_handshakes_does_not_block_others(https_server, ca):
    with socket.create_connection((HOST, https_server.port), timeout=10):
        assert https_post(https_server.port, client_context(ca))[0] == 202


# --- config -----------------------------------------------------------------------------------

def errors_of(tmp_path: Path, server_lines: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\n{server_lines}\n[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    with pytest.raises(ConfigErrors) as info:
        load_config(str(path), {})
    return {error.path: error.message for error in info.value.errors}


def test_cert_without_key_is_a_config_error(tmp_path, ca):
    cert, _ = write_pair(ca, tmp_path)
    found = errors_of(tmp_path, f'tls_cert = "{cert}"')
    assert list(found) == ["server.tls_key"]
    assert "tls_cert is set but tls_key is not" in found["server.tls_key"]


def test_key_without_cert_is_a_config_error(tmp_path, ca):
    _, key = write_pair(ca, tmp_path)
    found = errors_of(tmp_path, f'tls_key = "{key}"')
    assert list(found) == ["server.tls_cert"]


def test_missing_files_are_config_errors_naming_the_file(tmp_path):
    found = errors_of(tmp_path, f'tls_cert = "{tmp_path}/no.crt"\ntls_key = "{tmp_path}/no.key"')
    assert found["server.tls_cert"] == f"cannot read {tmp_path}/no.crt: No such file or directory"
    assert found["server.tls_key"] == f"cannot read {tmp_path}/no.key: No such file or directory"


def test_unreadable_key_is_a_config_error(tmp_path, ca):
    cert, key = write_pair(ca, tmp_path)
    key.chmod(0)
    try:
        if key.open("rb"):  # root reads anything
            pytest.skip("running as root: file permissions do not stop reads")
    except PermissionError:
        pass
    try:
        found = errors_of(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"')
    finally:
        key.chmod(0o600)
    assert found == {"server.tls_key": f"cannot read {key}: Permission denied"}


def test_invalid_pem_files_are_config_errors(tmp_path, ca):
    cert, key = tmp_path / "junk.crt", tmp_path / "junk.key"
    cert.write_text("not a certificate\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n")
    found = errors_of(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"')
    assert found == {"server.tls_cert": f"{cert} holds no PEM certificate",
                     "server.tls_key": f"{key} holds no PEM private key"}


def test_cert_and_key_swapped_are_config_errors(tmp_path, ca):
    cert, key = write_pair(ca, tmp_path)
    found = errors_of(tmp_path, f'tls_cert = "{key}"\ntls_key = "{cert}"')
    assert set(found) == {"server.tls_cert", "server.tls_key"}


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(tmp_path, ca):
    cert, _ = write_pair(ca, tmp_path, "one")
    _, other_key = write_pair(ca, tmp_path, "two")
    found = errors_of(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{other_key}"')
    assert list(found) == ["server.tls_key"]
    assert "does not match the certificate" in found["server.tls_key"]


def test_an_encrypted_key_is_a_config_error(tmp_path, ca):
    from cryptography.hazmat.primitives import serialization

    cert, key = write_pair(ca, tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"pw")))
    found = errors_of(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"')
    assert list(found) == ["server.tls_key"] and "encrypted" in found["server.tls_key"]


def test_relative_paths_are_relative_to_the_config_file(tmp_path, ca, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    write_pair(ca, folder)
    path = folder / "config.toml"
    path.write_text(f'[server]\ntls_cert = "server.crt"\ntls_key = "server.key"\n'
                    f'[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    monkeypatch.chdir(tmp_path)
    server = load_config("etc/config.toml", {}).server
    assert server.tls_enabled
    assert (server.tls_cert, server.tls_key) == (str(folder / "server.crt"), str(folder / "server.key"))


def test_check_prints_tls_errors_with_their_paths(tmp_path, ca):
    cert, _ = write_pair(ca, tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{tmp_path}/gone.key"\n'
                    f'[storage]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    done = fastwebhook("check", "-c", str(path), text=True)
    assert done.returncode == 1
    assert f"server.tls_key: cannot read {tmp_path}/gone.key" in done.stderr


# --- SIGHUP -----------------------------------------------------------------------------------

def wait_for_log(log: Path, message: str, after: int) -> dict:
    return wait_for_entry(log, lambda entry: entry.get("msg") == message, after=after, timeout=10.0)


@pytest.fixture
def child(tmp_path):
    children = []

    def _spawn(config: Path):
        running = spawn_server(config, tmp_path / "server.log")
        children.append(running)
        return running

    yield _spawn
    for running in children:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)


def test_sighup_reloads_the_certificate_and_a_bad_pair_keeps_the_old_one(tmp_path, ca, child):
    cert, key = write_pair(ca, tmp_path)
    running = child(write_config(tmp_path, tls_config(cert, key)))
    context = client_context(ca)
    first = fingerprint(cert)
    assert peer_fingerprint(running.port, context) == first
    # A keep-alive connection opened before the reload goes on serving after it.
    kept = http.client.HTTPSConnection(HOST, running.port, context=context, timeout=10)
    kept.request("POST", "/hook", b"{}", {"Content-Type": "application/json"})
    response = kept.getresponse()
    assert response.status == 202
    response.read()

    # A new certificate for the same host, written over the old files.
    new_cert, new_key = write_pair(ca, tmp_path, "renewed")
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key.read_bytes())
    second = fingerprint(cert)
    assert second != first
    seen = len(log_entries(running.log))
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running.log, "SIGHUP reloaded TLS certificates", seen)
    assert peer_fingerprint(running.port, context) == second
    assert https_post(running.port, context)[0] == 202
    kept.request("POST", "/hook", b"{}", {"Content-Type": "application/json"})
    response = kept.getresponse()
    assert response.status == 202
    response.read()
    kept.close()

    # A certificate whose key is another's: refused, and the second certificate stays in use.
    third_cert, _ = write_pair(ca, tmp_path, "third")
    cert.write_bytes(third_cert.read_bytes())
    seen = len(log_entries(running.log))
    running.process.send_signal(signal.SIGHUP)
    failure = wait_for_log(running.log, "SIGHUP: TLS certificate reload failed, still serving the old certificate", seen)
    assert failure["level"] == "error" and "mismatch" in failure["error"].lower()
    assert peer_fingerprint(running.port, context) == second
    assert https_post(running.port, context)[0] == 202

    # Files that are gone: the same.
    key.unlink()
    seen = len(log_entries(running.log))
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running.log, "SIGHUP: TLS certificate reload failed, still serving the old certificate", seen)
    assert peer_fingerprint(running.port, context) == second

    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(20) == 0


def test_sighup_without_tls_reloads_the_config_alone_and_serving_goes_on(tmp_path, child):
    config = write_config(tmp_path, f"""
[server]
listen = ["{HOST}:0"]
[storage]
url = "sqlite:///{{db}}"
[log]
level = "info"
{WORKFLOW}""")
    running = child(config)
    seen = len(log_entries(running.log))
    running.process.send_signal(signal.SIGHUP)
    wait_for_log(running.log, "SIGHUP: config reloaded", seen)
    assert not any("TLS" in entry.get("msg", "") for entry in log_entries(running.log)[seen:])
    connection = http.client.HTTPConnection(HOST, running.port, timeout=10)
    connection.request("POST", "/hook", b"{}", {"Content-Type": "application/json"})
    assert connection.getresponse().status == 202
    connection.close()
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(20) == 0
