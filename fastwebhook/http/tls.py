"""HTTPS: the server's SSL context, checked at config load and re-read on SIGHUP.

One context serves every listener for the life of the process.  A reload loads the new files
into that same context, so handshakes after it present the new certificate while connections
already open keep theirs.  The files are tried on a scratch context first: `load_cert_chain`
on a live context that fails half-way (a new certificate, then a key that does not match it)
would leave the certificate without its key and every later handshake failing.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..core.errors import ConfigError, FastwebhookError

# TLS 1.2 suites: forward secrecy and AEAD only (Mozilla's "intermediate" list without DHE,
# which would need DH parameters).  TLS 1.3 suites are all AEAD and are not affected by this.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))


class TlsError(FastwebhookError):
    """The certificate or key could not be loaded."""


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context (TLS 1.2+, AEAD suites, no compression or renegotiation) holding the pair."""
    context = _empty_context()
    _load(context, cert_file, key_file)
    return context


def reload(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load the pair again into ``context``; on any error raise TlsError and leave it as it was."""
    _load(_empty_context(), cert_file, key_file)
    _load(context, cert_file, key_file)


def check_pair(cert_file: str, key_file: str, path: str) -> list[ConfigError]:
    """What is wrong with the PEM pair, each error at ``path``.tls_cert or ``path``.tls_key."""
    cert_key, key_key = f"{path}.tls_cert", f"{path}.tls_key"
    errors: list[ConfigError] = []
    cert_pem, key_pem = _read(cert_file, cert_key, errors), _read(key_file, key_key, errors)
    certificate = private_key = None
    if cert_pem is not None:
        try:
            certificate = x509.load_pem_x509_certificates(cert_pem)[0]
        except ValueError:
            errors.append(ConfigError(cert_key, f"{cert_file} holds no PEM certificate"))
    if key_pem is not None:
        try:
            private_key = serialization.load_pem_private_key(key_pem, password=None)
        except TypeError:
            errors.append(ConfigError(key_key, f"{key_file} is encrypted; give an unencrypted key "
                                               "(and keep the file readable only by the server)"))
        except ValueError:
            errors.append(ConfigError(key_key, f"{key_file} holds no PEM private key"))
        except UnsupportedAlgorithm as exc:
            errors.append(ConfigError(key_key, f"{key_file}: unsupported private key: {exc}"))
    if errors or certificate is None or private_key is None:
        return errors
    if _public_der(certificate.public_key()) != _public_der(private_key.public_key()):
        return [ConfigError(key_key, f"{key_file} does not match the certificate in {cert_file} "
                                     "(the first certificate there must be the server's own)")]
    try:
        server_context(cert_file, key_file)
    except TlsError as exc:
        errors.append(ConfigError(cert_key, str(exc)))
    return errors


def _empty_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    # Compression invites CRIME; client-started renegotiation is a cheap way to burn our CPU.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except (OSError, ValueError, TlsError) as exc:  # ssl.SSLError is an OSError
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TlsError(f"cannot load {cert_file} and {key_file}: {detail}") from None


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's password.
    raise TlsError("the private key is encrypted")


def _read(file: str, key: str, errors: list[ConfigError]) -> bytes | None:
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        errors.append(ConfigError(key, f"cannot read {file}: {exc.strerror}"))
        return None


def _public_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
