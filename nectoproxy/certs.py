"""NectoProxy's certificate authority: the CA on disk, leaf issuing, and the leaf caches.

The pure builders (:func:`create_ca`, :func:`issue_leaf`) make certificates and touch nothing
else, so they are easy to test and reuse. :class:`CertStore` owns the files: it keeps the CA in
``ca.pem`` / ``ca-key.pem`` and caches leaves in memory and in ``domain-certs/``, because
signing a leaf for every TLS handshake would be the proxy's most expensive step.
"""

from __future__ import annotations

import datetime as dt
import inspect
import ipaddress
import logging
import os
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nectoproxy.errors import CertError

log = logging.getLogger("nectoproxy.certs")

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
DOMAIN_DIR = "domain-certs"

CA_VALIDITY = dt.timedelta(days=3650)
#: Backdating absorbs clock skew between this machine and the client.
BACKDATE = dt.timedelta(days=1)
#: Browsers reject leaves valid for 200 days or more; 1 + 180 days stays well inside that.
LEAF_LIFETIME = dt.timedelta(days=180)
#: A cached leaf closer than this to its expiry is re-minted rather than served.
MIN_REMAINING = dt.timedelta(days=1)
MEMORY_CACHE_SIZE = 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CertCallback = Callable[[str, x509.Certificate], Awaitable[None] | None]

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_DNS_NAME = re.compile(r"^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a leaf only signs its TLS handshakes."""
    leaf = not sign_certs
    return x509.KeyUsage(leaf, False, False, False, False, sign_certs, sign_certs, False, False)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(encoding, pkcs8, serialization.NoEncryption())


def create_ca(
    common_name: str = "NectoProxy CA", organization: str = "NectoProxy"
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Make a new self-signed root CA (RSA 2048, 10 years), unique to this installation."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    now = _utcnow()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certs=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def generate_leaf_key() -> ec.EllipticCurvePrivateKey:
    """Make the P-256 key pair that every leaf of a store shares, so minting is one signature."""
    return ec.generate_private_key(ec.SECP256R1())


def parse_host(host: str) -> tuple[str, IPAddress | None]:
    """Normalise a host into the name certificates and caches use, and its IP if it is one.

    Accepts bracketed IPv6 literals ("[::1]"), drops a zone id and a trailing dot, lower-cases
    names and turns internationalised names into their ASCII (A-label) form.
    """
    text = host.strip().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return ip.compressed, ip
    try:
        name = text.lower() if text.isascii() else text.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise CertError(f"invalid host name {host!r}: {exc}") from None
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise CertError(f"invalid host name {host!r}")
    return name, None


def issue_leaf(
    host: str,
    *,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign a server certificate for ``host`` (a DNS name or an IP literal) with the CA."""
    name, ip = parse_host(host)
    now = now or _utcnow()
    general_name: x509.GeneralName = x509.IPAddress(ip) if ip else x509.DNSName(name)
    # RFC 5280: a certificate without a subject must mark its SAN critical.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if len(name) <= 64 else [])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([general_name]), critical=len(subject) == 0)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def safe_file_name(host: str) -> str:
    """The cache file stem for ``host``: only [a-z0-9.-], so it can never leave domain_dir."""
    return re.sub(r"[^a-z0-9.-]", "_", host.lower())


def _write_temp(directory: Path, data: bytes, mode: int, *, durable: bool) -> Path:
    # The mode is given to os.open, so a key file is never readable by others, not even briefly.
    temp = directory / f".tmp-{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_atomic(path: Path, data: bytes, mode: int, *, durable: bool = False) -> None:
    """Write ``path`` so that readers see the old file or the whole new one, never a part."""
    temp = _write_temp(path.parent, data, mode, durable=durable)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def publish_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` complete and only if it does not exist yet; False if someone else did."""
    temp = _write_temp(path.parent, data, mode, durable=True)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    return True


def _same_public_key(key: object, cert: x509.Certificate) -> bool:
    """Whether ``key`` (a private key of any type) belongs to ``cert``."""
    public_key = getattr(key, "public_key", None)
    return public_key is not None and bool(public_key() == cert.public_key())


def _make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents owner-only (0700): they will hold a CA key."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it between our check and mkdir
        except OSError as exc:
            raise CertError(f"cannot create {directory}: {exc.strerror or exc}") from None


class _CachedContext(NamedTuple):
    context: ssl.SSLContext
    cert: x509.Certificate
    ca: x509.Certificate  # the CA it was checked against; a new CA invalidates the entry


class _CARace(CertError):
    """The CA files look inconsistent, as they do for a moment while another process writes."""


class CertStore:
    """The CA files in ``directory`` plus the memory and disk caches of leaf certificates."""

    def __init__(self, directory: str | os.PathLike[str],
                 alpn: tuple[str, ...] = ("http/1.1",)) -> None:
        self._directory = Path(directory).expanduser()
        #: The protocols offered to clients in ALPN, the proxy's preference first.
        self.alpn = alpn
        self._ca_cert: x509.Certificate | None = None
        self._ca_key: rsa.RSAPrivateKey | None = None
        self._leaf_key: ec.EllipticCurvePrivateKey | None = None
        self._leaf_key_pem = b""
        self._contexts: OrderedDict[str, _CachedContext] = OrderedDict()
        #: Set by the engine; called (and awaited if it returns an awaitable) after each new mint.
        self.on_cert_generated: CertCallback | None = None

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def ca_path(self) -> Path:
        return self._directory / CA_CERT_FILE

    @property
    def ca_key_path(self) -> Path:
        return self._directory / CA_KEY_FILE

    @property
    def domain_dir(self) -> Path:
        return self._directory / DOMAIN_DIR

    @property
    def ca_cert(self) -> x509.Certificate:
        if self._ca_cert is None:
            raise CertError("the CA is not loaded: call CertStore.load_or_create() first")
        return self._ca_cert

    def _ca(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        if self._ca_cert is None or self._ca_key is None:
            raise CertError("the CA is not loaded: call CertStore.load_or_create() first")
        return self._ca_cert, self._ca_key

    # -- the CA on disk ------------------------------------------------------------------------

    def load_or_create(self) -> bool:
        """Load the CA, creating it first if there is none; True if this call created it.

        Two processes starting at once are safe: the key is published with an exclusive link,
        so exactly one of them creates the CA and the other loads the winner's.
        """
        _make_dirs(self._directory)
        _make_dirs(self.domain_dir)
        created = False
        if not self.ca_key_path.exists():
            if self.ca_path.exists():
                hint = "restore the key or run 'nectoproxy cert regenerate'"
                raise CertError(f"{self.ca_key_path}: missing next to {self.ca_path}; {hint}")
            cert, key = create_ca()
            created = self._publish_ca(cert, key, replace=False)
        self._load_ca(wait_for_cert=not created)
        if created:
            log.info("created a new CA in %s (SHA-256 %s)", self._directory, self.fingerprint())
        return created

    def regenerate(self) -> None:
        """Replace the CA with a new one and drop every leaf the old one signed."""
        _make_dirs(self._directory)
        cert, key = create_ca()
        self._publish_ca(cert, key, replace=True)
        self._ca_cert, self._ca_key = cert, key
        removed = self.clear_cache()
        log.info("regenerated the CA in %s; removed %d cached leaves", self._directory, removed)

    def _publish_ca(self, cert: x509.Certificate, key: rsa.RSAPrivateKey, *, replace: bool) -> bool:
        key_pem = _key_pem(key)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        try:
            if replace:
                write_atomic(self.ca_key_path, key_pem, 0o600, durable=True)
            elif not publish_exclusive(self.ca_key_path, key_pem, 0o600):
                return False  # another process won the race; load its CA
            write_atomic(self.ca_path, cert_pem, 0o644, durable=True)
        except OSError as exc:
            raise CertError(f"cannot write the CA in {self._directory}: {exc.strerror}") from None
        return True

    def _load_ca(self, *, wait_for_cert: bool) -> None:
        # A concurrent creator publishes the key before the certificate, and a concurrent
        # regenerate swaps them one after the other, so a short wait tells a race from damage.
        deadline = time.monotonic() + (1.0 if wait_for_cert else 0.0)
        while True:
            try:
                self._ca_cert, self._ca_key = self._read_ca()
                break
            except _CARace:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        if self._ca_cert.not_valid_after_utc <= _utcnow():
            expiry = f"{self._ca_cert.not_valid_after_utc:%Y-%m-%d}"
            raise CertError(
                f"{self.ca_path}: expired on {expiry}; run 'nectoproxy cert regenerate'"
            )

    def _read_ca(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        try:
            cert_data = self.ca_path.read_bytes()
            key_data = self.ca_key_path.read_bytes()
        except FileNotFoundError as exc:
            hint = "restore it or run 'nectoproxy cert regenerate'"
            raise _CARace(f"{exc.filename}: missing; {hint}") from None
        except OSError as exc:
            raise CertError(f"cannot read {exc.filename}: {exc.strerror}") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_data)
        except ValueError as exc:
            raise CertError(f"{self.ca_path}: not a PEM certificate ({exc})") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError) as exc:
            raise CertError(f"{self.ca_key_path}: not a PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CertError(f"{self.ca_key_path}: expected an RSA key, found {type(key).__name__}")
        if not _same_public_key(key, cert):
            raise _CARace(f"{self.ca_key_path}: does not match the certificate {self.ca_path}")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound as exc:
            raise CertError(f"{self.ca_path}: not a usable CA certificate ({exc})") from None
        if not constraints.ca:
            raise CertError(f"{self.ca_path}: not a CA certificate (basicConstraints CA:false)")
        return cert, key

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    def fingerprint(self, algorithm: str = "sha256") -> str:
        """The CA's fingerprint as browsers show it: upper-case hex pairs joined by colons."""
        try:
            algo = _HASHES[algorithm.lower().replace("-", "")]()
        except KeyError:
            raise CertError(f"unknown fingerprint algorithm {algorithm!r}") from None
        return ":".join(f"{b:02X}" for b in self.ca_cert.fingerprint(algo))

    # -- leaves ----------------------------------------------------------------------------

    def _leaf_path(self, name: str) -> Path:
        return self.domain_dir / f"{safe_file_name(name)}.pem"

    def _ensure_leaf_key(self) -> None:
        if self._leaf_key is None:
            self._leaf_key = generate_leaf_key()
            self._leaf_key_pem = _key_pem(self._leaf_key)

    async def server_context(self, host: str) -> ssl.SSLContext:
        """The server-side TLS context presenting a leaf for ``host``, from cache or new."""
        name, ip = parse_host(host)
        if (hit := self._memory_hit(name)) is not None:
            return hit
        self._ensure_leaf_key()
        # On the event loop, not in a worker thread: about 1 ms of work (sign, write, load),
        # and the hop to a thread plus the GIL handed back and forth made the first request
        # to a host 0.5 ms slower. With no await in between, concurrent first requests for
        # one host still make one leaf.
        entry, is_new = self._load_or_mint(name, ip)
        self._remember(name, entry)
        if is_new:
            await self._notify(name, entry.cert)
        return entry.context

    def _memory_hit(self, name: str) -> ssl.SSLContext | None:
        entry = self._contexts.get(name)
        if entry is None:
            return None
        if entry.ca is not self._ca_cert or not _fresh(entry.cert):
            del self._contexts[name]
            return None
        self._contexts.move_to_end(name)
        return entry.context

    def _remember(self, name: str, entry: _CachedContext) -> None:
        self._contexts[name] = entry
        self._contexts.move_to_end(name)
        while len(self._contexts) > MEMORY_CACHE_SIZE:
            self._contexts.popitem(last=False)

    def _load_or_mint(self, name: str, ip: IPAddress | None) -> tuple[_CachedContext, bool]:
        # One CA for the whole step, even if regenerate() swaps it meanwhile: the entry must
        # name the CA that really signed (or was checked against) its leaf.
        ca_cert, ca_key = self._ca()
        path = self._leaf_path(name)
        cert = self._read_usable_leaf(path, name, ip, ca_cert)
        is_new = cert is None
        if cert is None:
            cert = self._mint(name, path, ca_cert, ca_key)
        context = _server_context_from_file(path, self.alpn)
        return _CachedContext(context, cert, ca_cert), is_new

    def _read_usable_leaf(
        self, path: Path, name: str, ip: IPAddress | None, ca_cert: x509.Certificate
    ) -> x509.Certificate | None:
        """The leaf cached at ``path`` if the current CA issued it, for this host, still valid."""
        try:
            data = path.read_bytes()
            cert = x509.load_pem_x509_certificate(data)
            key = serialization.load_pem_private_key(data, password=None)
            cert.verify_directly_issued_by(ca_cert)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound) as exc:
            log.info("not reusing cached leaf %s: %s", path, exc or type(exc).__name__)
            return None
        names: list[object] = [*sans.get_values_for_type(x509.IPAddress)]
        names += sans.get_values_for_type(x509.DNSName)
        if (ip or name) not in names or not _same_public_key(key, cert) or not _fresh(cert):
            log.info("not reusing cached leaf %s: wrong host, key or validity", path)
            return None
        return cert

    def _mint(
        self, name: str, path: Path, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey
    ) -> x509.Certificate:
        assert self._leaf_key is not None
        started = time.perf_counter()
        cert = issue_leaf(name, ca_cert=ca_cert, ca_key=ca_key, leaf_key=self._leaf_key)
        try:
            pem = cert.public_bytes(serialization.Encoding.PEM) + self._leaf_key_pem
            write_atomic(path, pem, 0o600)
        except OSError as exc:
            raise CertError(f"cannot write {path}: {exc.strerror}") from None
        log.debug("minted a leaf for %s in %.1f ms", name, (time.perf_counter() - started) * 1000)
        return cert

    async def _notify(self, name: str, cert: x509.Certificate) -> None:
        callback = self.on_cert_generated
        if callback is None:
            return
        try:
            result = callback(name, cert)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # The engine's listener failing must not cost the client its handshake.
            log.exception("on_cert_generated failed for %s", name)

    def clear_cache(self) -> int:
        """Delete every cached leaf (disk and memory); return how many files were removed."""
        self._contexts.clear()
        removed = 0
        try:
            entries = list(self.domain_dir.iterdir())
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise CertError(f"cannot list {self.domain_dir}: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.suffix == ".pem" or entry.name.startswith(".tmp-"):
                try:
                    entry.unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise CertError(f"cannot remove {entry}: {exc.strerror or exc}") from None
                removed += entry.suffix == ".pem"
        return removed

    def cached_count(self) -> int:
        """How many leaves are cached on disk."""
        try:
            return sum(1 for entry in self.domain_dir.iterdir() if entry.suffix == ".pem")
        except FileNotFoundError:
            return 0


def _fresh(cert: x509.Certificate) -> bool:
    """Valid now and for at least another day, so a handshake never gets a dying leaf."""
    now = _utcnow()
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - now >= MIN_REMAINING


def _server_context_from_file(path: Path, alpn: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(alpn))
    context.load_cert_chain(path)
    return context
