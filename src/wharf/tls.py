"""``http.tls``: the files the HTTP server serves HTTPS with, checked before it starts.

A certificate file that holds no certificate, a key that is encrypted or is not the
certificate's, a client CA file without certificates: each stops ``wharf serve`` with one
line naming the key and the file, rather than a server that fails every handshake."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .config import ConfigError, TLSConfig


@dataclass(frozen=True)
class TLSFiles:
    certificate: Path
    key: Path  # PKCS#8, PKCS#1 or SEC1
    client_cas: Path | None  # every client CA in one file; None: no client certificates
    client_required: bool  # with client_cas: a client without a certificate is refused
    minimum: str  # "tls1.2" or "tls1.3"


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None


def _certificates(path: str, key: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(_read(path, key))
    except ValueError:
        found = []
    if not found:
        raise ConfigError(f"{key}: {path} holds no PEM certificate")
    return found


def _private_directory() -> Path:
    """A directory only this user reads, removed when the server process exits (not when a
    worker forked from it does)."""
    directory = Path(tempfile.mkdtemp(prefix="wharf-tls-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    return directory


def prepare_tls(tls: TLSConfig) -> TLSFiles:
    """The files to serve ``tls`` with; ``ConfigError`` naming the key and the file for one
    that cannot be used. The client CAs of several files are put into one temporary file,
    the one file the HTTP servers read them from."""
    certificate = _certificates(tls.certificate, "http.tls.certificate")[0]
    key_pem = _read(tls.key, "http.tls.key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(
            f"http.tls.key: {tls.key} is encrypted: give the key without a passphrase"
        ) from None
    except ValueError:
        raise ConfigError(f"http.tls.key: {tls.key} holds no PEM private key") from None
    _usable(key, tls.key)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigError(
            f"http.tls.key: {tls.key} is not the key of the certificate in {tls.certificate} "
            "(http.tls.certificate)"
        )
    client_cas = None
    if tls.clientcas:
        found = [
            _certificates(path, f"http.tls.clientcas[{index}]") for index, path in enumerate(tls.clientcas)
        ]
        if len(found) == 1:
            # Read again by every worker that starts: the file as it was given.
            client_cas = Path(tls.clientcas[0])
        else:
            client_cas = _private_directory() / "clientcas.pem"
            client_cas.write_bytes(
                b"".join(cert.public_bytes(serialization.Encoding.PEM) for certs in found for cert in certs)
            )
    required = tls.clientauth == "require-and-verify-client-cert"
    return TLSFiles(Path(tls.certificate), Path(tls.key), client_cas, required, tls.minimumtls)


def _usable(key: PrivateKeyTypes, path: str) -> None:
    """Refuse a key that loads but that the HTTP servers cannot sign with (granian's rustls
    signs with RSA, ECDSA P-256/P-384 and Ed25519; OpenSSL refuses RSA under 2048 bits)."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size >= 2048:
            return
        kind = f"{key.key_size}-bit RSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name in ("secp256r1", "secp384r1"):
            return
        kind = f"EC {key.curve.name}"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return
    else:
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "unknown"
    raise ConfigError(
        f"http.tls.key: {path} is a {kind} key, which the HTTP server cannot use "
        "(RSA of 2048 bits or more, EC P-256 or P-384, or Ed25519)"
    )
