"""http.tls: `wharf serve` speaks HTTPS itself, with the certificate and key it is given, a
minimum protocol version, and client certificates required when clientcas names the CAs
they must come from. skopeo copies through it verifying the certificate; files that cannot
be used stop start-up in one line naming the key and the file. Certificates are made here
by a throwaway CA; every server is a real process."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .layout import Layout, make_image
from .server import WharfServer, free_port
from .test_startup import one_line, refused, serve_config, write_config

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    certificate: Path
    key: Path


class CA:
    """A certificate authority of the test's own, writing what it issues into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.subject = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=1))
        )

    def issue(
        self,
        name: str,
        server: bool,
        key_format: serialization.PrivateFormat,
        rsa_key: bool = False,
        key: Any = None,
    ) -> Issued:
        """A certificate for ``key`` (made: EC P-256, or RSA 2048 with ``rsa_key``)."""
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            if rsa_key:
                key = rsa.generate_private_key(65537, 2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = self._builder(subject, key.public_key())
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.cert", self.directory / f"{name}.key")
        issued.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
        )
        return issued


def context(ca: CA, client: Issued | None = None, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    made = ssl.create_default_context(cafile=str(ca.path))
    if client is not None:
        made.load_cert_chain(str(client.certificate), str(client.key))
    if maximum is not None:
        made.maximum_version = maximum
    return made


def tls_server(tmp_path: Path, server: str, ca: CA, issued: Issued, **tls: Any) -> WharfServer:
    made = WharfServer(
        tmp_path / "wharf",
        {"http": {"tls": {"certificate": str(issued.certificate), "key": str(issued.key), **tls}}},
        server=server,
    )
    made.directory.mkdir(parents=True, exist_ok=True)
    made.verify = context(ca)
    return made


def fails_to_talk(url: str, verify: ssl.SSLContext) -> None:
    """No answer comes back: the handshake, or the first read after it, fails."""
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/v2/", verify=verify, timeout=10)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "pki", "wharf-test-ca")


# Keys as openssl and certbot write them: SEC1 ("BEGIN EC PRIVATE KEY"), PKCS#1 and PKCS#8.
@pytest.mark.parametrize(
    ("server", "key_format", "rsa_key"),
    [
        ("granian", serialization.PrivateFormat.TraditionalOpenSSL, False),
        ("granian", serialization.PrivateFormat.TraditionalOpenSSL, True),
        ("granian", serialization.PrivateFormat.PKCS8, False),
        ("uvicorn", serialization.PrivateFormat.TraditionalOpenSSL, False),
    ],
)
def test_https_is_served_with_the_certificate_given(
    tmp_path: Path, ca: CA, server: str, key_format: serialization.PrivateFormat, rsa_key: bool
) -> None:
    issued = ca.issue("registry", server=True, key_format=key_format, rsa_key=rsa_key)
    wharf = tls_server(tmp_path, server, ca, issued).start()
    try:
        assert wharf.url.startswith("https://")
        with wharf.client() as client:
            answer = client.get("/v2/")
            assert answer.status_code == 200, answer.text
            peer = answer.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
        assert peer == x509.load_pem_x509_certificate(issued.certificate.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        # A client that does not trust the CA refuses the server; plain HTTP gets no answer.
        fails_to_talk(wharf.url, ssl.create_default_context())
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{wharf.port}/v2/", timeout=10)
    finally:
        wharf.stop()
    assert "serving on https://" in wharf.log_path.read_text()


def skopeo_copy(
    skopeo: str, cert_dir: Path, source: str, destination: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            skopeo,
            "--insecure-policy",
            "copy",
            "--dest-cert-dir",
            str(cert_dir),
            "--dest-tls-verify=true",
            "--src-cert-dir",
            str(cert_dir),
            "--src-tls-verify=true",
            source,
            destination,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_client_certificates_are_required_from_the_clientcas_and_skopeo_presents_one(
    tmp_path: Path, ca: CA, skopeo: str
) -> None:
    issued = ca.issue("registry", server=True, key_format=serialization.PrivateFormat.TraditionalOpenSSL)
    clients_ca = CA(tmp_path / "clients", "clients-ca")
    other_ca = CA(tmp_path / "other", "other-ca")
    unrelated = CA(tmp_path / "unrelated", "unrelated-ca")
    # Two files: every CA of each is trusted.
    wharf = tls_server(tmp_path, "granian", ca, issued, clientcas=[str(other_ca.path), str(clients_ca.path)])
    alice = clients_ca.issue("alice", server=False, key_format=serialization.PrivateFormat.PKCS8)
    wharf.verify = context(ca, client=alice)
    wharf.start()
    try:
        fails_to_talk(wharf.url, context(ca))
        stranger = unrelated.issue("mallory", server=False, key_format=serialization.PrivateFormat.PKCS8)
        fails_to_talk(wharf.url, context(ca, client=stranger))
        bob = other_ca.issue("bob", server=False, key_format=serialization.PrivateFormat.PKCS8)
        assert httpx.get(f"{wharf.url}/v2/", verify=context(ca, client=bob), timeout=10).status_code == 200

        layout = Layout(tmp_path / "layout")
        layout.add_image(make_image(), "v1")
        destination = f"docker://127.0.0.1:{wharf.port}/tls/app:v1"
        cert_dir = tmp_path / "certs.d"
        cert_dir.mkdir()
        (cert_dir / "ca.crt").write_bytes(ca.path.read_bytes())
        # Trusting the server is not enough: it wants a client certificate.
        refused_copy = skopeo_copy(skopeo, cert_dir, f"oci:{tmp_path / 'layout'}:v1", destination)
        assert refused_copy.returncode != 0, refused_copy.stdout
        with wharf.client() as client:
            assert client.get("/v2/tls/app/tags/list").status_code == 404
        # containers/image presents client.cert with client.key from the same directory.
        (cert_dir / "client.cert").write_bytes(alice.certificate.read_bytes())
        (cert_dir / "client.key").write_bytes(alice.key.read_bytes())
        copied = skopeo_copy(skopeo, cert_dir, f"oci:{tmp_path / 'layout'}:v1", destination)
        assert copied.returncode == 0, copied.stderr
        back = skopeo_copy(skopeo, cert_dir, destination, f"oci:{tmp_path / 'out'}:v1")
        assert back.returncode == 0, back.stderr
        with wharf.client() as client:
            assert client.get("/v2/tls/app/tags/list").json()["tags"] == ["v1"]
    finally:
        wharf.stop()


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
@pytest.mark.parametrize("clientauth", ["require-and-verify-client-cert", "verify-client-cert-if-given"])
def test_clientauth_says_whether_a_client_without_a_certificate_is_let_in(
    tmp_path: Path, ca: CA, server: str, clientauth: str
) -> None:
    issued = ca.issue("registry", server=True, key_format=serialization.PrivateFormat.PKCS8)
    clients_ca = CA(tmp_path / "clients", "clients-ca")
    alice = clients_ca.issue("alice", server=False, key_format=serialization.PrivateFormat.PKCS8)
    # One file: given to the HTTP server as it is.
    wharf = tls_server(tmp_path, server, ca, issued, clientcas=[str(clients_ca.path)], clientauth=clientauth)
    wharf.verify = context(ca, client=alice)
    wharf.start()
    try:
        # A certificate from another CA is refused either way.
        stranger = CA(tmp_path / "unrelated", "unrelated-ca").issue(
            "mallory", server=False, key_format=serialization.PrivateFormat.PKCS8
        )
        fails_to_talk(wharf.url, context(ca, client=stranger))
        if clientauth == "require-and-verify-client-cert":
            fails_to_talk(wharf.url, context(ca))
        else:
            assert httpx.get(f"{wharf.url}/v2/", verify=context(ca), timeout=10).status_code == 200
        with wharf.client() as client:
            assert client.get("/v2/").status_code == 200
    finally:
        wharf.stop()


def test_only_http1_is_offered_over_tls(tmp_path: Path, ca: CA) -> None:
    """granian would offer h2 in ALPN, where the slow-client header timeout does not reach."""
    issued = ca.issue("registry", server=True, key_format=serialization.PrivateFormat.PKCS8)
    wharf = tls_server(tmp_path, "granian", ca, issued).start()
    try:
        offering = context(ca)
        offering.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", wharf.port), timeout=10) as raw,
            offering.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
    finally:
        wharf.stop()


def test_minimumtls_tls13_refuses_tls12_clients(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("registry", server=True, key_format=serialization.PrivateFormat.PKCS8)
    wharf = tls_server(tmp_path, "granian", ca, issued, minimumtls="tls1.3").start()
    try:
        fails_to_talk(wharf.url, context(ca, maximum=ssl.TLSVersion.TLSv1_2))
        with wharf.client() as client:
            answer = client.get("/v2/")
            assert answer.extensions["network_stream"].get_extra_info("ssl_object").version() == "TLSv1.3"
    finally:
        wharf.stop()
    default = tls_server(tmp_path / "default", "granian", ca, issued).start()
    try:
        with httpx.Client(verify=context(ca, maximum=ssl.TLSVersion.TLSv1_2), timeout=10) as client:
            assert client.get(f"{default.url}/v2/").status_code == 200
    finally:
        default.stop()


def unusable(tmp_path: Path, ca: CA, case: str) -> tuple[dict[str, Any], str]:
    """A tls section with one unusable file, and what the refusal must say."""
    issued = ca.issue("registry", server=True, key_format=serialization.PrivateFormat.PKCS8)
    tls: dict[str, Any] = {"certificate": str(issued.certificate), "key": str(issued.key)}
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    if case == "missing certificate":
        tls["certificate"] = str(tmp_path / "absent.pem")
        return tls, f"http.tls.certificate: cannot read {tmp_path / 'absent.pem'}"
    if case == "no certificate in it":
        tls["certificate"] = str(not_pem)
        return tls, f"http.tls.certificate: {not_pem} holds no PEM certificate"
    if case == "key of another certificate":
        tls["key"] = str(ca.issue("other", server=True, key_format=serialization.PrivateFormat.PKCS8).key)
        return tls, f"http.tls.key: {tls['key']} is not the key of the certificate in {issued.certificate}"
    if case == "encrypted key":
        key = serialization.load_pem_private_key(issued.key.read_bytes(), password=None)
        locked = tmp_path / "locked.key"
        locked.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        tls["key"] = str(locked)
        return tls, f"http.tls.key: {locked} is encrypted"
    if case in ("1024-bit RSA key", "EC secp521r1 key"):
        weak: Any = ec.generate_private_key(ec.SECP521R1())
        if "RSA" in case:
            weak = rsa.generate_private_key(65537, 1024)
        made = ca.issue("weak", server=True, key_format=serialization.PrivateFormat.PKCS8, key=weak)
        tls.update(certificate=str(made.certificate), key=str(made.key))
        return tls, f"http.tls.key: {made.key} is a {case}, which the HTTP server cannot use"
    if case == "client CAs without certificates":
        tls["clientcas"] = [str(ca.path), str(not_pem)]
        return tls, f"http.tls.clientcas[1]: {not_pem} holds no PEM certificate"
    assert case == "tls1.3 on uvicorn"
    tls["minimumtls"] = "tls1.3"
    return tls, "http.tls.minimumtls: tls1.3 is served by granian only"


@pytest.mark.parametrize(
    "case",
    [
        "missing certificate",
        "no certificate in it",
        "key of another certificate",
        "encrypted key",
        "client CAs without certificates",
        "1024-bit RSA key",
        "EC secp521r1 key",
        "tls1.3 on uvicorn",
    ],
)
def test_unusable_files_stop_start_up_naming_the_key_and_the_file(tmp_path: Path, ca: CA, case: str) -> None:
    tls, said = unusable(tmp_path, ca, case)
    path = write_config(tmp_path, serve_config(f"127.0.0.1:{free_port()}", tmp_path, tls=tls))
    server = "uvicorn" if case == "tls1.3 on uvicorn" else "granian"
    line = one_line(refused(["serve", "--server", server, str(path)], cwd=tmp_path))
    assert said in line, line
    assert not (tmp_path / "data").exists()


def test_the_token_challenge_sends_clients_to_https(tmp_path: Path, ca: CA) -> None:
    """Served over TLS, the realm is https on the request's host; behind a TLS proxy, it is
    http.host's (Distribution's external URL)."""
    issued = ca.issue("registry", server=True, key_format=serialization.PrivateFormat.PKCS8)
    wharf = tls_server(tmp_path, "granian", ca, issued)
    wharf.config["auth"] = {"accounts": {"enabled": True}}
    wharf.start()
    try:
        with wharf.client() as client:
            answer = client.get("/v2/")
        assert answer.status_code == 401
        realm = f'realm="https://127.0.0.1:{wharf.port}/auth/token"'
        assert realm in answer.headers["www-authenticate"], answer.headers
    finally:
        wharf.stop()

    behind = WharfServer(
        tmp_path / "behind-proxy",
        {"http": {"host": "https://registry.example.com/"}, "auth": {"accounts": {"enabled": True}}},
    )
    behind.directory.mkdir()
    behind.start()
    try:
        with behind.client() as client:
            challenge = client.get("/v2/").headers["www-authenticate"]
        assert 'realm="https://registry.example.com/auth/token"' in challenge, challenge
    finally:
        behind.stop()
