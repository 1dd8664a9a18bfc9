"""The pinned transport over real TLS on loopback: the socket goes to the checked address while
SNI, certificate verification and the Host header keep the host name; a host without a checked
address gets no connection at all."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reflexe_notify.adapters.webhook_http import WebhookGuard, describe_failure, post, webhook_client
from reflexe_notify.domain.addresses import parse_networks
from tests.support.receiver import WebhookReceiver

pytestmark = pytest.mark.integration
NAME = "hooks.pinned.test"


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
                 ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@dataclass
class TlsReceiver:
    """The tests' webhook receiver over https on 127.0.0.1, its certificate naming NAME only,
    issued by a test CA."""

    server_names: list[str | None] = field(default_factory=list)  # SNI of each handshake
    client_context: ssl.SSLContext | None = None
    receiver: WebhookReceiver | None = None

    @property
    def port(self) -> int:
        assert self.receiver is not None
        return self.receiver.port

    @property
    def hosts(self) -> list[str]:
        """The Host header of each request."""
        return [d.headers["host"] for d in self.receiver.received] if self.receiver else []

    async def start(self) -> TlsReceiver:
        ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Reflexe test CA")])
        ca = _certificate("Reflexe test CA", ca_key, ca_name, ca_key, ca=True)
        leaf = _certificate(NAME, leaf_key, ca_name, ca_key, ca=False)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load(server, leaf, leaf_key)
        server.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self.client_context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
        self.receiver = await WebhookReceiver(ssl_context=server).start()
        return self

    def _load(self, context: ssl.SSLContext, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
            pem.write(cert.public_bytes(serialization.Encoding.PEM))
            pem.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
            pem.flush()
            context.load_cert_chain(pem.name)

    async def stop(self) -> None:
        if self.receiver:
            await self.receiver.stop()


@pytest.fixture
async def tls_receiver() -> AsyncIterator[TlsReceiver]:
    r = await TlsReceiver().start()
    yield r
    await r.stop()


def guard() -> WebhookGuard:
    async def resolve(host: str, _port: int) -> list[str]:
        return {NAME: ["127.0.0.1"], "impostor.pinned.test": ["127.0.0.1"]}[host]  # unknown to the system DNS

    return WebhookGuard(allowed_networks=parse_networks("127.0.0.1/32"), resolver=resolve)


async def test_https_goes_to_the_checked_address_with_the_name_in_sni_certificate_and_host(
        tls_receiver: TlsReceiver) -> None:
    url = f"https://{NAME}:{tls_receiver.port}/in"
    async with webhook_client(httpx.Limits(), 5.0, {}, ssl_context=tls_receiver.client_context) as client:
        target = await guard().check(url)
        assert target.address == "127.0.0.1"
        assert await post(client, target, b"{}", {"content-type": "application/json"}) == 204
        assert await post(client, await guard().check(url), b"{}", {}) == 204  # the pooled connection
    assert tls_receiver.server_names == [NAME]  # one handshake, for the name
    assert tls_receiver.hosts == [f"{NAME}:{tls_receiver.port}"] * 2


async def test_an_unreachable_checked_address_falls_back_to_the_next_checked_one(tls_receiver: TlsReceiver) -> None:
    async def resolve(_host: str, _port: int) -> list[str]:
        return ["127.0.0.3", "127.0.0.1"]  # nothing listens on the first one

    checking = WebhookGuard(allowed_networks=parse_networks("127.0.0.0/8"), resolver=resolve)
    async with webhook_client(httpx.Limits(), 5.0, {}, ssl_context=tls_receiver.client_context) as client:
        target = await checking.check(f"https://{NAME}:{tls_receiver.port}/in")
        assert target.addresses == ("127.0.0.3", "127.0.0.1")
        assert await post(client, target, b"{}", {}) == 204
    assert tls_receiver.server_names == [NAME]


async def test_a_certificate_for_another_name_is_refused(tls_receiver: TlsReceiver) -> None:
    url = f"https://impostor.pinned.test:{tls_receiver.port}/in"
    async with webhook_client(httpx.Limits(), 5.0, {}, ssl_context=tls_receiver.client_context) as client:
        with pytest.raises(httpx.ConnectError) as failed:
            await post(client, await guard().check(url), b"{}", {})
    assert describe_failure(failed.value) == "TLS certificate not valid for the host"
    assert tls_receiver.hosts == []


async def test_no_connection_is_made_for_a_host_without_a_checked_address(tls_receiver: TlsReceiver) -> None:
    async with webhook_client(httpx.Limits(), 5.0, {}, ssl_context=tls_receiver.client_context) as client:
        with pytest.raises(httpx.ConnectError, match="no checked address"):
            await client.post(f"https://{NAME}:{tls_receiver.port}/in", content=b"{}")
        with pytest.raises(httpx.ConnectError, match="no checked address"):
            await client.post(f"https://127.0.0.1:{tls_receiver.port}/in", content=b"{}")
    assert tls_receiver.server_names == [] and tls_receiver.hosts == []
