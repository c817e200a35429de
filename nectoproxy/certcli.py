"""``nectoproxy cert``: show, export, trust and replace the NectoProxy CA from a terminal.

``nectoproxy.cli`` owns the top-level parser and calls :func:`add_cert_parser` and
:func:`run_cert`; everything the ``cert`` command does lives here (and, for trust stores, in
:mod:`nectoproxy.truststore`), so the CLI module stays a thin dispatcher. Results go to
stdout, problems to stderr as one line each, and the exit code says which happened.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from nectoproxy import truststore
from nectoproxy.certs import CertStore, write_atomic
from nectoproxy.errors import CertError

EXPORT_NAMES = {"pem": "nectoproxy-ca.pem", "der": "nectoproxy-ca.crt", "p12": "nectoproxy-ca.p12"}
KEY_WARNING = (
    "warning: {target} contains the CA's PRIVATE KEY: anyone who gets it can impersonate any "
    "HTTPS site to every device that trusts this CA. Keep it secret and delete it when done."
)


class UsageError(Exception):
    """A combination of options that cannot work; reported like argparse does (exit 2)."""


def add_cert_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cert`` and its actions to the top-level parser's sub-commands."""
    cert = subparsers.add_parser(
        "cert",
        help="show, export, trust or replace the NectoProxy CA",
        description="Without an action, print the CA certificate's path and SHA-256 "
        "fingerprint (creating the CA on first use).",
    )
    only = cert.add_mutually_exclusive_group()
    only.add_argument("--path", action="store_true", help="print only the CA certificate's path")
    only.add_argument(
        "--clear-cache", action="store_true", help="delete the cached per-domain certificates"
    )
    actions = cert.add_subparsers(dest="cert_command", metavar="ACTION")
    actions.add_parser("info", help="subject, validity, fingerprints, key and cache of the CA")

    export = actions.add_parser("export", help="write the CA certificate (PEM, DER or PKCS#12)")
    export.add_argument("--format", choices=sorted(EXPORT_NAMES), default="pem")
    export.add_argument(
        "--out", metavar="PATH", help="output file or directory ('-' writes PEM to stdout)"
    )
    export.add_argument(
        "--include-key", action="store_true", help="also export the CA's private key (dangerous)"
    )
    export.add_argument("--password", help="encrypt the exported key / PKCS#12 with this password")

    for name, verb in (("install", "trust"), ("uninstall", "stop trusting")):
        trust = actions.add_parser(name, help=f"{verb} the CA in this machine's trust stores")
        trust.add_argument(
            "--dry-run", action="store_true", help="print every change, make none of them"
        )
        trust.add_argument(
            "--nssdb", type=Path, metavar="DIR", help="NSS database (default: ~/.pki/nssdb)"
        )
        trust.add_argument(
            "--no-system", action="store_true", help="leave the system trust store alone"
        )

    regenerate = actions.add_parser("regenerate", help="replace the CA with a new one")
    regenerate.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def run_cert(args: argparse.Namespace, certs_dir: Path) -> int:
    """Carry out a parsed ``cert`` command; 0 on success, 1 on failure, 2 on misuse."""
    store = CertStore(certs_dir)
    action = getattr(args, "cert_command", None)
    flags = [f for f in ("path", "clear_cache") if getattr(args, f, False)]
    try:
        if action and flags:
            raise UsageError(f"--{flags[0].replace('_', '-')} cannot be combined with {action!r}")
        handler = _ACTIONS.get(action or "", _show)
        return handler(store, args)
    except UsageError as exc:
        print(f"nectoproxy cert: error: {exc}", file=sys.stderr)
        return 2
    except (CertError, OSError) as exc:
        print(f"nectoproxy cert: error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _show(store: CertStore, args: argparse.Namespace) -> int:
    if getattr(args, "clear_cache", False):
        removed = store.clear_cache()
        noun = "certificate" if removed == 1 else "certificates"
        print(f"Removed {removed} cached domain {noun} from {store.domain_dir}")
        return 0
    created = store.load_or_create()
    if getattr(args, "path", False):
        print(store.ca_path)
        return 0
    if created:
        print(f"Created a new NectoProxy CA in {store.directory}")
    print(f"CA certificate: {store.ca_path}")
    print(f"SHA-256 fingerprint: {store.fingerprint()}")
    if created:
        print("Trust it with: nectoproxy cert install")
    return 0


def _info(store: CertStore, args: argparse.Namespace) -> int:
    store.load_or_create()
    cert = store.ca_cert
    days_left = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    rows = [
        ("Subject", cert.subject.rfc4514_string()),
        ("Issuer", cert.issuer.rfc4514_string()),
        ("Serial", f"{cert.serial_number:X}"),
        ("Not before", f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("Not after", f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC ({days_left} days left)"),
        ("SHA-256", store.fingerprint("sha256")),
        ("SHA-1", store.fingerprint("sha1")),
        ("Key", _describe_key(cert)),
        ("CA certificate", str(store.ca_path)),
        ("CA private key", str(store.ca_key_path)),
        ("Cached domain certificates", f"{store.cached_count()} in {store.domain_dir}"),
    ]
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':':<{width}} {value}")
    return 0


def _describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name} ({key.key_size} bits)"
    return type(key).__name__


def _export(store: CertStore, args: argparse.Namespace) -> int:
    fmt, include_key, out = args.format, args.include_key, args.out
    password = args.password.encode() if args.password else None
    if include_key and fmt == "der":
        raise UsageError("DER holds a certificate only; use --format pem or p12 with --include-key")
    if out == "-" and fmt != "pem":
        raise UsageError(f"{fmt.upper()} is binary; use --out FILE, or --format pem for stdout")
    if password and not include_key and fmt != "p12":
        raise UsageError("--password only applies with --include-key or --format p12")
    store.load_or_create()
    data = _export_bytes(store, fmt, include_key, password)
    if out == "-":
        sys.stdout.write(data.decode("ascii"))
        sys.stdout.flush()
        target = "the output"
    else:
        path = Path(out).expanduser() if out else Path.cwd() / EXPORT_NAMES[fmt]
        if path.is_dir():
            path = path / EXPORT_NAMES[fmt]
        # With the key inside, the file is owner-only from its first byte.
        write_atomic(path, data, 0o600 if include_key else 0o644, durable=True)
        what = "certificate and private key" if include_key else "certificate"
        print(f"Wrote the NectoProxy CA {what} ({fmt.upper()}) to {path}")
        target = str(path)
    if include_key:
        print(KEY_WARNING.format(target=target), file=sys.stderr)
        if password is None:
            print("warning: the private key is not encrypted (see --password)", file=sys.stderr)
    return 0


def _export_bytes(store: CertStore, fmt: str, include_key: bool, password: bytes | None) -> bytes:
    cert = store.ca_cert
    if fmt == "der":
        return cert.public_bytes(serialization.Encoding.DER)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key = _load_ca_key(store) if include_key else None
    if fmt == "p12":
        return pkcs12.serialize_key_and_certificates(b"NectoProxy CA", key, cert, None, encryption)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        pkcs8 = serialization.PrivateFormat.PKCS8
        pem += key.private_bytes(serialization.Encoding.PEM, pkcs8, encryption)
    return pem


def _load_ca_key(store: CertStore) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(store.ca_key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # load_or_create already checked; be explicit
        raise CertError(f"{store.ca_key_path}: expected an RSA key")
    return key


def _install(store: CertStore, args: argparse.Namespace) -> int:
    store.load_or_create()
    truststore.change_trust(
        store.ca_cert,
        store.ca_path,
        install=True,
        system=not getattr(args, "no_system", False),
        nssdb=getattr(args, "nssdb", None),
        dry_run=getattr(args, "dry_run", False),
    )
    return 0


def _uninstall(store: CertStore, args: argparse.Namespace) -> int:
    # Uninstalling must work even when the CA files are gone or damaged: the stores are found
    # by file name and nickname, and the certificate only adds the thumbprint for macOS/Windows.
    try:
        cert: x509.Certificate | None = x509.load_pem_x509_certificate(store.ca_path.read_bytes())
    except (OSError, ValueError):
        cert = None
    truststore.change_trust(
        cert,
        store.ca_path,
        install=False,
        system=not args.no_system,
        nssdb=args.nssdb,
        dry_run=args.dry_run,
    )
    return 0


def _regenerate(store: CertStore, args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "nectoproxy cert: error: refusing to replace the CA without confirmation; "
                "run on a terminal or pass --yes",
                file=sys.stderr,
            )
            return 1
        print(f"This replaces the NectoProxy CA in {store.directory}. Browsers and devices that")
        print("trust the current CA will reject NectoProxy until they trust the new one.")
        try:
            answer = input("Replace the CA? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Aborted; the CA was not changed.")
            return 1
    removed = store.cached_count()
    store.regenerate()
    print(f"Created a new NectoProxy CA: {store.ca_path}")
    print(f"SHA-256 fingerprint: {store.fingerprint()}")
    print(f"Removed {removed} cached domain certificate{'' if removed == 1 else 's'}.")
    print("Trust the new CA again: run `nectoproxy cert install` (it replaces the old one), and")
    print("re-import it on every device or browser where you added the old one by hand.")
    return 0


_ACTIONS: dict[str, Callable[[CertStore, argparse.Namespace], int]] = {
    "info": _info,
    "export": _export,
    "install": _install,
    "uninstall": _uninstall,
    "regenerate": _regenerate,
}
