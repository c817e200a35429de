"""Tests for nectoproxy.certs: the CA files, leaf certificates, and both leaf caches."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nectoproxy import certs
from nectoproxy.certs import CertStore, create_ca, generate_leaf_key, issue_leaf
from nectoproxy.errors import CertError

pytestmark = pytest.mark.anyio
OPENSSL = "/usr/bin/openssl"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def umask() -> Iterator[None]:
    """Run with the common umask 022 so the expected file modes are deterministic."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    cert_store = CertStore(tmp_path / "certs")
    cert_store.load_or_create()
    return cert_store


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _cached_leaf(store: CertStore, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((store.domain_dir / f"{name}.pem").read_bytes())


class Recorder:
    """An on_cert_generated listener that remembers every host it was told about."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def __call__(self, host: str, cert: x509.Certificate) -> None:
        await anyio.lowlevel.checkpoint()
        self.hosts.append(host)


# -- the pure builders ----------------------------------------------------------------------


def test_ca_extensions() -> None:
    cert, key = create_ca()
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "NectoProxy CA"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "NectoProxy"
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _utcnow()
    assert now - cert.not_valid_before_utc > dt.timedelta(hours=23)
    assert cert.not_valid_after_utc - now > dt.timedelta(days=3649)
    assert create_ca()[0].serial_number != cert.serial_number


def test_leaf_extensions() -> None:
    ca_cert, ca_key = create_ca()
    leaf_key = generate_leaf_key()
    now = _utcnow()
    leaf = issue_leaf("Example.TEST", ca_cert=ca_cert, ca_key=ca_key, leaf_key=leaf_key, now=now)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example.test"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.test"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert leaf.not_valid_before_utc == (now - dt.timedelta(days=1)).replace(microsecond=0)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc < dt.timedelta(days=199)
    leaf.verify_directly_issued_by(ca_cert)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
    ],
)
def test_leaf_for_ip_literal_has_ip_san(host: str, expected: str) -> None:
    ca_cert, ca_key = create_ca()
    leaf = issue_leaf(host, ca_cert=ca_cert, ca_key=ca_key, leaf_key=generate_leaf_key())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [expected]
    assert san.get_values_for_type(x509.DNSName) == []


def test_leaf_idna_long_and_invalid_names() -> None:
    ca_cert, ca_key = create_ca()
    key = generate_leaf_key()
    leaf = issue_leaf("Bücher.Example", ca_cert=ca_cert, ca_key=ca_key, leaf_key=key)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example"]
    long_host = "a" * 60 + ".example.test"
    leaf = issue_leaf(long_host, ca_cert=ca_cert, ca_key=ca_key, leaf_key=key)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == [long_host]
    for bad in ["", "exa mple.test", "a/b.test", "a..b"]:
        with pytest.raises(CertError):
            issue_leaf(bad, ca_cert=ca_cert, ca_key=ca_key, leaf_key=key)


@pytest.mark.parametrize("host", ["example.test", "127.0.0.1", "::1"])
def test_openssl_verifies_leaf_strictly(tmp_path: Path, host: str) -> None:
    ca_cert, ca_key = create_ca()
    leaf = issue_leaf(host, ca_cert=ca_cert, ca_key=ca_key, leaf_key=generate_leaf_key())
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    check = "-verify_ip" if ":" in host or host[0].isdigit() else "-verify_hostname"
    result = subprocess.run(
        [OPENSSL, "verify", "-x509_strict", "-purpose", "sslserver", check, host,
         "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_safe_file_names_stay_inside_domain_dir(tmp_path: Path) -> None:
    assert certs.safe_file_name("::1") == "__1"
    assert certs.safe_file_name("Example.TEST") == "example.test"
    for nasty in ["../../etc/passwd", "..", "a\\..\\b", "/abs", "x\0y", "*.example.test"]:
        name = certs.safe_file_name(nasty)
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
        assert (tmp_path / f"{name}.pem").resolve().parent == tmp_path.resolve()


# -- the CA on disk ------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_file_modes(tmp_path: Path, mask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_chmod(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("modes must be set when files are created, not afterwards")

    monkeypatch.setattr(os, "chmod", no_chmod)
    old = os.umask(mask)
    try:
        cert_store = CertStore(tmp_path / "home" / "certs")
        assert cert_store.load_or_create() is True
    finally:
        os.umask(old)
    assert _mode(tmp_path / "home") == 0o700
    assert _mode(cert_store.directory) == 0o700
    assert _mode(cert_store.domain_dir) == 0o700
    assert _mode(cert_store.ca_key_path) == 0o600
    assert _mode(cert_store.ca_path) == 0o644
    assert sorted(p.name for p in cert_store.directory.iterdir()) == [
        "ca-key.pem", "ca.pem", "domain-certs"
    ]  # fmt: skip


async def test_leaf_cache_file_mode(store: CertStore, umask: None) -> None:
    await store.server_context("mode.test")
    assert _mode(store.domain_dir / "mode.test.pem") == 0o600


def test_restart_reuses_ca(store: CertStore) -> None:
    again = CertStore(store.directory)
    assert again.load_or_create() is False
    assert again.fingerprint() == store.fingerprint()
    assert again.load_or_create() is False  # idempotent on the same object too


def test_fingerprint_matches_openssl(store: CertStore) -> None:
    for algorithm, flag, size in [("sha256", "-sha256", 32), ("sha1", "-sha1", 20)]:
        result = subprocess.run(
            [OPENSSL, "x509", "-noout", "-fingerprint", flag, "-in", str(store.ca_path)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        fingerprint = store.fingerprint(algorithm)
        assert fingerprint == result.stdout.strip().split("=", 1)[1]
        assert len(fingerprint.split(":")) == size and fingerprint == fingerprint.upper()
    assert store.ca_pem() == store.ca_path.read_bytes()


def test_concurrent_first_start_creates_one_ca(tmp_path: Path) -> None:
    directory = tmp_path / "race"
    barrier = threading.Barrier(8)
    results: list[tuple[bool, str]] = []

    def start() -> None:
        cert_store = CertStore(directory)
        barrier.wait()
        created = cert_store.load_or_create()
        results.append((created, cert_store.fingerprint()))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert sum(created for created, _ in results) == 1
    assert len({fingerprint for _, fingerprint in results}) == 1
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]


def test_corrupt_or_mismatched_ca_raises_cert_error(store: CertStore) -> None:
    good_key = store.ca_key_path.read_bytes()
    store.ca_key_path.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(CertError, match="ca-key.pem"):
        CertStore(store.directory).load_or_create()
    other_key = create_ca()[1]
    store.ca_key_path.write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CertError, match="does not match"):
        CertStore(store.directory).load_or_create()
    store.ca_key_path.write_bytes(good_key)
    store.ca_path.write_bytes(b"not a certificate")
    with pytest.raises(CertError, match="ca.pem"):
        CertStore(store.directory).load_or_create()
    store.ca_key_path.unlink()
    with pytest.raises(CertError, match="ca-key.pem"):
        CertStore(store.directory).load_or_create()


def test_unusable_directory_raises_cert_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CertError, match="cannot create"):
        CertStore(tmp_path / "file" / "certs").load_or_create()
    with pytest.raises(CertError, match="load_or_create"):
        CertStore(tmp_path / "unloaded").ca_cert  # noqa: B018


# -- leaves and their caches ----------------------------------------------------------------


async def test_restart_reuses_cached_leaf_from_disk(store: CertStore) -> None:
    await store.server_context("reuse.test")
    serial = _cached_leaf(store, "reuse.test").serial_number
    again = CertStore(store.directory)
    again.load_or_create()
    recorder = Recorder()
    again.on_cert_generated = recorder
    await again.server_context("REUSE.test")
    assert recorder.hosts == []
    assert _cached_leaf(again, "reuse.test").serial_number == serial
    assert again.cached_count() == 1


async def test_leaf_from_another_ca_is_replaced(store: CertStore) -> None:
    other_cert, other_key = create_ca()
    leaf_key = generate_leaf_key()
    foreign = issue_leaf("other.test", ca_cert=other_cert, ca_key=other_key, leaf_key=leaf_key)
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = store.domain_dir / "other.test.pem"
    path.write_bytes(foreign.public_bytes(serialization.Encoding.PEM) + key_pem)
    recorder = Recorder()
    store.on_cert_generated = recorder
    await store.server_context("other.test")
    assert recorder.hosts == ["other.test"]
    _cached_leaf(store, "other.test").verify_directly_issued_by(store.ca_cert)


async def test_expiring_leaf_is_replaced(store: CertStore) -> None:
    leaf_key = generate_leaf_key()
    old = _utcnow() - dt.timedelta(days=179, hours=12)  # expires in 12 hours
    ca_key = serialization.load_pem_private_key(store.ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    dying = issue_leaf(
        "dying.test", ca_cert=store.ca_cert, ca_key=ca_key, leaf_key=leaf_key, now=old
    )
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (store.domain_dir / "dying.test.pem").write_bytes(
        dying.public_bytes(serialization.Encoding.PEM) + key_pem
    )
    recorder = Recorder()
    store.on_cert_generated = recorder
    await store.server_context("dying.test")
    assert recorder.hosts == ["dying.test"]
    assert _cached_leaf(store, "dying.test").serial_number != dying.serial_number


async def test_clear_cache_counts_and_forgets(store: CertStore) -> None:
    recorder = Recorder()
    store.on_cert_generated = recorder
    for host in ["a.test", "b.test", "::1"]:
        await store.server_context(host)
    assert store.cached_count() == 3
    assert (store.domain_dir / "__1.pem").exists()
    assert store.clear_cache() == 3
    assert store.cached_count() == 0
    await store.server_context("a.test")  # the memory cache was emptied too
    assert recorder.hosts == ["a.test", "b.test", "::1", "a.test"]


async def test_concurrent_callers_cause_one_mint(store: CertStore) -> None:
    recorder = Recorder()
    store.on_cert_generated = recorder
    contexts: list[ssl.SSLContext] = []

    async def fetch() -> None:
        contexts.append(await store.server_context("same.test"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(fetch)
    assert recorder.hosts == ["same.test"]
    assert len(contexts) == 20 and len({id(c) for c in contexts}) == 1
    assert store.cached_count() == 1


async def test_sync_and_failing_listeners(store: CertStore) -> None:
    seen: list[str] = []
    store.on_cert_generated = lambda host, cert: seen.append(host)
    await store.server_context("sync.test")
    assert seen == ["sync.test"]

    def broken(host: str, cert: x509.Certificate) -> None:
        raise RuntimeError("listener bug")

    store.on_cert_generated = broken
    assert isinstance(await store.server_context("broken.test"), ssl.SSLContext)


async def test_leaves_share_one_key_and_memory_cache_is_bounded(
    store: CertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certs, "MEMORY_CACHE_SIZE", 2)
    for host in ["one.test", "two.test", "three.test"]:
        await store.server_context(host)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    keys = {
        _cached_leaf(store, host).public_key().public_bytes(serialization.Encoding.DER, spki)
        for host in ["one.test", "two.test", "three.test"]
    }
    assert len(keys) == 1
    assert list(store._contexts) == ["two.test", "three.test"]


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str
) -> tuple[str | None, Any, str | None]:
    """Run a TLS handshake over a socketpair; return the ALPN, peer cert and TLS version."""
    server_sock, client_sock = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                tls.sendall(b"ok")
        except OSError as exc:  # reported by the main thread (ssl.SSLError is an OSError)
            errors.append(exc)

    for sock in (server_sock, client_sock):
        sock.settimeout(10)
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock, server_hostname=hostname) as tls:
            assert tls.recv(2) == b"ok"
            result = tls.selected_alpn_protocol(), tls.getpeercert(), tls.version()
    finally:
        thread.join(10)
        server_sock.close()
    assert not errors, errors
    return result


@pytest.mark.parametrize("host", ["example.test", "127.0.0.1", "::1"])
async def test_real_tls_handshake(store: CertStore, host: str) -> None:
    server = await store.server_context(host)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = ssl.create_default_context(cafile=str(store.ca_path))
    client.set_alpn_protocols(["h2", "http/1.1"])
    alpn, peer, version = await anyio.to_thread.run_sync(_handshake, server, client, host)
    assert alpn == "http/1.1"
    assert version in {"TLSv1.2", "TLSv1.3"}
    assert peer["issuer"] == (
        (("commonName", "NectoProxy CA"),),
        (("organizationName", "NectoProxy"),),
    )


@pytest.mark.parametrize("trust_our_ca", [True, False])
async def test_handshake_fails_on_wrong_name_or_unknown_ca(
    store: CertStore, trust_our_ca: bool
) -> None:
    server = await store.server_context("example.test")
    if trust_our_ca:
        client, hostname = ssl.create_default_context(cafile=str(store.ca_path)), "wrong.test"
    else:
        other_ca = create_ca()[0].public_bytes(serialization.Encoding.PEM).decode()
        client, hostname = ssl.create_default_context(cadata=other_ca), "example.test"
    with pytest.raises(ssl.SSLCertVerificationError):
        await anyio.to_thread.run_sync(_handshake, server, client, hostname)


async def test_regenerate_changes_ca_and_clears_cache(store: CertStore) -> None:
    await store.server_context("before.test")
    old_fingerprint, old_ca = store.fingerprint(), store.ca_cert
    store.regenerate()
    assert store.fingerprint() != old_fingerprint
    assert store.cached_count() == 0
    assert _mode(store.ca_key_path) == 0o600
    recorder = Recorder()
    store.on_cert_generated = recorder
    await store.server_context("before.test")
    assert recorder.hosts == ["before.test"]
    leaf = _cached_leaf(store, "before.test")
    leaf.verify_directly_issued_by(store.ca_cert)
    with pytest.raises(InvalidSignature):
        leaf.verify_directly_issued_by(old_ca)
    reloaded = CertStore(store.directory)
    assert reloaded.load_or_create() is False
    assert reloaded.fingerprint() == store.fingerprint()
