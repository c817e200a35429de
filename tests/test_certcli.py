"""Tests for ``nectoproxy cert`` (nectoproxy.certcli and nectoproxy.truststore), in-process.

Every trust-store test uses a temporary NSS database and ``--no-system`` or ``--dry-run``: CI
runs as root, and these tests must never change the machine's own trust store.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import anyio
import pytest
from cryptography import x509

from nectoproxy import truststore
from nectoproxy.certcli import add_cert_parser, run_cert
from nectoproxy.certs import CertStore

OPENSSL = "/usr/bin/openssl"
needs_certutil = pytest.mark.skipif(
    shutil.which("certutil") is None, reason="certutil (Debian package libnss3-tools) is missing"
)


class Result(NamedTuple):
    code: int
    out: str
    err: str


class RunCert(Protocol):
    def __call__(self, *argv: str, directory: Path | None = None) -> Result: ...


class TTYInput(io.StringIO):
    """Standard input that claims to be a terminal, with the user's answer already typed."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A temporary HOME and working directory, and the usual umask, for every test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    return tmp_path / "certs"


@pytest.fixture
def cert(capsys: pytest.CaptureFixture[str], certs_dir: Path) -> RunCert:
    def run(*argv: str, directory: Path | None = None) -> Result:
        parser = argparse.ArgumentParser(prog="nectoproxy")
        add_cert_parser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["cert", *argv])
        code = run_cert(args, directory or certs_dir)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return Result(code, out, err)

    return run


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, check=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _nss_lookup(nssdb: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["certutil", "-d", f"sql:{nssdb}", "-L", "-n", "NectoProxy CA", "-a"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


# -- showing the CA ---------------------------------------------------------------------------


def test_cert_creates_and_shows_ca(cert: RunCert, certs_dir: Path) -> None:
    first = cert()
    assert first.code == 0
    assert f"Created a new NectoProxy CA in {certs_dir}" in first.out
    store = CertStore(certs_dir)
    store.load_or_create()
    assert f"CA certificate: {store.ca_path}" in first.out
    assert f"SHA-256 fingerprint: {store.fingerprint()}" in first.out
    again = cert()
    assert "Created" not in again.out and store.fingerprint() in again.out


def test_cert_path_prints_only_the_path(cert: RunCert, certs_dir: Path) -> None:
    result = cert("--path")
    assert result == Result(0, f"{certs_dir / 'ca.pem'}\n", "")
    assert (certs_dir / "ca.pem").exists()


def test_clear_cache_says_how_many(cert: RunCert, certs_dir: Path) -> None:
    store = CertStore(certs_dir)
    store.load_or_create()

    async def mint() -> None:
        for host in ["a.test", "b.test", "c.test"]:
            await store.server_context(host)

    anyio.run(mint)
    result = cert("--clear-cache")
    assert result.code == 0
    assert result.out == f"Removed 3 cached domain certificates from {store.domain_dir}\n"
    assert store.cached_count() == 0
    assert cert("--clear-cache").out.startswith("Removed 0 cached domain certificates")


def test_info(cert: RunCert, certs_dir: Path) -> None:
    result = cert("info")
    assert result.code == 0
    store = CertStore(certs_dir)
    store.load_or_create()
    for expected in [
        "Subject:", "CN=NectoProxy CA", "Issuer:", "Not before:", "Not after:", "days left)",
        f"SHA-256: {store.fingerprint('sha256')}", f"SHA-1: {store.fingerprint('sha1')}",
        "RSA 2048 bits", str(store.ca_path), "Cached domain certificates: 0",
    ]:  # fmt: skip
        assert expected in " ".join(result.out.split()), expected


def test_option_and_action_together_is_a_usage_error(cert: RunCert) -> None:
    result = cert("--path", "info")
    assert result.code == 2 and "cannot be combined" in result.err


# -- exporting --------------------------------------------------------------------------------


def test_export_pem_der_p12_default_names(cert: RunCert, tmp_path: Path) -> None:
    for fmt, name, inform in [
        ("pem", "nectoproxy-ca.pem", "PEM"),
        ("der", "nectoproxy-ca.crt", "DER"),
    ]:
        result = cert("export", "--format", fmt)
        assert result.code == 0 and result.err == ""
        path = tmp_path / name
        checked = _openssl("x509", "-in", str(path), "-inform", inform, "-noout", "-subject")
        assert checked.returncode == 0 and "NectoProxy CA" in checked.stdout, checked.stderr
        assert _mode(path) == 0o644
        assert b"PRIVATE KEY" not in path.read_bytes()
    assert cert("export", "--format", "p12").code == 0
    p12 = tmp_path / "nectoproxy-ca.p12"
    certs_only = _openssl("pkcs12", "-in", str(p12), "-nokeys", "-passin", "pass:")
    assert certs_only.returncode == 0 and "BEGIN CERTIFICATE" in certs_only.stdout
    keys = _openssl("pkcs12", "-in", str(p12), "-nocerts", "-nodes", "-passin", "pass:")
    assert keys.returncode == 0 and "PRIVATE KEY" not in keys.stdout


def test_export_to_stdout_and_to_a_directory(cert: RunCert, tmp_path: Path) -> None:
    result = cert("export", "--out", "-")
    assert result.code == 0
    assert result.out.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in result.out
    x509.load_pem_x509_certificate(result.out.encode())
    (tmp_path / "exports").mkdir()
    assert cert("export", "--format", "der", "--out", str(tmp_path / "exports")).code == 0
    assert (tmp_path / "exports" / "nectoproxy-ca.crt").exists()


def test_export_pem_with_key(cert: RunCert, tmp_path: Path, certs_dir: Path) -> None:
    out = tmp_path / "ca-and-key.pem"
    result = cert("export", "--include-key", "--out", str(out))
    assert result.code == 0 and "PRIVATE KEY" in result.err and "warning" in result.err
    assert _mode(out) == 0o600
    assert _openssl("x509", "-in", str(out), "-noout").returncode == 0
    key = _openssl("pkey", "-in", str(out), "-pubout")
    ca_pub = _openssl("x509", "-in", str(certs_dir / "ca.pem"), "-noout", "-pubkey")
    assert key.returncode == 0 and key.stdout == ca_pub.stdout


def test_export_p12_with_key_and_password(cert: RunCert, tmp_path: Path) -> None:
    out = tmp_path / "ca.p12"
    result = cert(
        "export", "--format", "p12", "--include-key", "--password", "s3cret", "--out", str(out)
    )
    assert result.code == 0 and "PRIVATE KEY" in result.err
    assert _mode(out) == 0o600
    keys = _openssl("pkcs12", "-in", str(out), "-nocerts", "-nodes", "-passin", "pass:s3cret")
    assert keys.returncode == 0 and "BEGIN PRIVATE KEY" in keys.stdout
    wrong = _openssl("pkcs12", "-in", str(out), "-nocerts", "-nodes", "-passin", "pass:wrong")
    assert wrong.returncode != 0


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--format", "der", "--include-key"],
        ["export", "--format", "p12", "--out", "-"],
        ["export", "--password", "x"],
    ],
)
def test_export_misuse(cert: RunCert, argv: list[str]) -> None:
    result = cert(*argv)
    assert result.code == 2 and result.err.count("\n") == 1


# -- trust stores -------------------------------------------------------------------------------


@needs_certutil
def test_nss_install_is_idempotent_and_uninstalls(cert: RunCert, tmp_path: Path) -> None:
    nssdb = tmp_path / "nssdb"
    first = cert("install", "--no-system", "--nssdb", str(nssdb))
    assert first.code == 0, first.err
    assert "installed 'NectoProxy CA'" in first.out and "skipped (--no-system)" in first.out
    assert _nss_lookup(nssdb).returncode == 0
    listing = subprocess.run(
        ["certutil", "-d", f"sql:{nssdb}", "-L"], capture_output=True, text=True, check=True
    )
    assert any(
        "NectoProxy CA" in line and line.split()[-1] == "C,,"
        for line in listing.stdout.splitlines()
    )
    second = cert("install", "--no-system", "--nssdb", str(nssdb))
    assert second.code == 0 and "already installed" in second.out
    assert len(x509.load_pem_x509_certificates(_nss_lookup(nssdb).stdout.encode())) == 1
    removed = cert("uninstall", "--no-system", "--nssdb", str(nssdb))
    assert removed.code == 0 and "removed 'NectoProxy CA'" in removed.out
    assert _nss_lookup(nssdb).returncode != 0
    again = cert("uninstall", "--no-system", "--nssdb", str(nssdb))
    assert again.code == 0 and "not installed" in again.out


@needs_certutil
def test_install_after_regenerate_replaces_the_old_ca(
    cert: RunCert, tmp_path: Path, certs_dir: Path
) -> None:
    nssdb = tmp_path / "nssdb"
    assert cert("install", "--no-system", "--nssdb", str(nssdb)).code == 0
    assert cert("regenerate", "--yes").code == 0
    result = cert("install", "--no-system", "--nssdb", str(nssdb))
    assert result.code == 0 and "replaced an older one" in result.out
    stored = x509.load_pem_x509_certificates(_nss_lookup(nssdb).stdout.encode())
    assert stored == [x509.load_pem_x509_certificate((certs_dir / "ca.pem").read_bytes())]


@pytest.fixture
def temp_system_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> truststore.SystemStore:
    """A system trust store in a temporary folder, so these tests never depend on (or touch)
    the machine's own; its refresh command is a harmless ``true``."""
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    store = truststore.SystemStore("Test", anchors / "nectoproxy-ca.crt", ("true",))
    monkeypatch.setattr(truststore, "detect_system_store", lambda *args: store)
    return store


def test_dry_run_changes_nothing(cert: RunCert, tmp_path: Path,
                                 temp_system_store: truststore.SystemStore) -> None:
    system = temp_system_store
    nssdb = tmp_path / "nssdb"
    result = cert("install", "--dry-run", "--nssdb", str(nssdb))
    assert result.code == 0, result.err
    assert "Dry run: nothing was changed." in result.out
    assert f"would write {system.anchor}" in result.out
    assert f"would run: {' '.join(system.refresh)}" in result.out
    assert not system.anchor.exists()
    if shutil.which("certutil"):
        assert "would run: certutil -N" in result.out and "would run: certutil -A" in result.out
    assert not nssdb.exists()


@needs_certutil
def test_dry_run_uninstall_keeps_the_nss_entry(cert: RunCert, tmp_path: Path) -> None:
    nssdb = tmp_path / "nssdb"
    assert cert("install", "--no-system", "--nssdb", str(nssdb)).code == 0
    result = cert("uninstall", "--no-system", "--dry-run", "--nssdb", str(nssdb))
    assert result.code == 0 and "would run: certutil -D" in result.out
    assert _nss_lookup(nssdb).returncode == 0


def test_without_root_the_system_store_is_left_alone(
    cert: RunCert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    temp_system_store: truststore.SystemStore,
) -> None:
    system = temp_system_store
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # and no certutil: NSS is skipped
    result = cert("install")
    assert result.code == 0
    assert "needs root" in result.out and "sudo nectoproxy cert install" in result.out
    assert "certutil not found" in result.out
    assert not system.anchor.exists()
    missing = cert("install", "--no-system", "--nssdb", str(tmp_path / "nssdb"))
    assert missing.code == 1 and "libnss3-tools" in missing.err


@pytest.mark.parametrize(
    ("os_release", "family"),
    [
        ("ID=ubuntu\nID_LIKE=debian\n", "debian"),
        ("ID=debian\n", "debian"),
        ("ID=fedora\n", "fedora"),
        ('ID="rhel"\nID_LIKE="fedora"\n', "fedora"),
        ('ID="almalinux"\nID_LIKE="rhel centos fedora"\n', "fedora"),
        ("ID=arch\n", "arch"),
        ("ID=manjaro\nID_LIKE=arch\n", "arch"),
        ('ID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n', "suse"),
    ],
)
def test_detect_system_store(tmp_path: Path, os_release: str, family: str) -> None:
    path = tmp_path / "os-release"
    path.write_text(os_release)
    assert truststore.detect_system_store(path) == truststore.SYSTEM_STORES[family]


def test_system_store_locations() -> None:
    stores = truststore.SYSTEM_STORES
    assert stores["debian"].anchor == Path("/usr/local/share/ca-certificates/nectoproxy-ca.crt")
    assert stores["debian"].refresh == ("update-ca-certificates",)
    assert stores["fedora"].anchor == Path("/etc/pki/ca-trust/source/anchors/nectoproxy-ca.pem")
    assert stores["fedora"].refresh == ("update-ca-trust",)
    assert stores["arch"].anchor.parent == Path("/etc/ca-certificates/trust-source/anchors")
    assert stores["suse"].anchor.parent == Path("/etc/pki/trust/anchors")


def test_macos_prints_commands(
    cert: RunCert, certs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    installed = cert("install")
    assert installed.code == 0
    ca = certs_dir / "ca.pem"
    assert (
        f"sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}"
        in installed.out
    )
    store = CertStore(certs_dir)
    store.load_or_create()
    thumbprint = store.fingerprint("sha1").replace(":", "")
    removed = cert("uninstall")
    assert f"sudo security delete-certificate -Z {thumbprint}" in removed.out


def test_windows_prints_commands(
    cert: RunCert, certs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    ca = certs_dir / "ca.pem"
    installed = cert("install", "--dry-run")
    assert f'certutil -addstore -user Root "{ca}"' in installed.out
    assert (
        f'Import-Certificate -FilePath "{ca}" -CertStoreLocation Cert:\\CurrentUser\\Root'
        in installed.out
    )
    store = CertStore(certs_dir)
    store.load_or_create()
    thumbprint = store.fingerprint("sha1").replace(":", "")
    removed = cert("uninstall")
    assert f"certutil -delstore -user Root {thumbprint}" in removed.out
    assert f"Cert:\\CurrentUser\\Root\\{thumbprint} | Remove-Item" in removed.out


# -- regenerating ---------------------------------------------------------------------------------


def _fingerprint(certs_dir: Path) -> str:
    store = CertStore(certs_dir)
    store.load_or_create()
    return store.fingerprint()


def test_regenerate_refuses_without_tty_or_yes(cert: RunCert, certs_dir: Path) -> None:
    before = _fingerprint(certs_dir)
    result = cert("regenerate")
    assert result.code == 1 and "--yes" in result.err and result.err.count("\n") == 1
    assert _fingerprint(certs_dir) == before


@pytest.mark.parametrize(
    ("answer", "replaced"), [("y\n", True), ("yes\n", True), ("n\n", False), ("", False)]
)
def test_regenerate_asks_on_a_tty(
    cert: RunCert, certs_dir: Path, monkeypatch: pytest.MonkeyPatch, answer: str, replaced: bool
) -> None:
    before = _fingerprint(certs_dir)
    monkeypatch.setattr(sys, "stdin", TTYInput(answer))
    result = cert("regenerate")
    assert "Replace the CA? [y/N]" in result.out
    assert (result.code == 0) is replaced
    assert (_fingerprint(certs_dir) != before) is replaced


def test_regenerate_with_yes(cert: RunCert, certs_dir: Path) -> None:
    store = CertStore(certs_dir)
    store.load_or_create()
    before = store.fingerprint()
    anyio.run(store.server_context, "old.test")
    result = cert("regenerate", "--yes")
    assert result.code == 0
    after = _fingerprint(certs_dir)
    assert after != before and after in result.out
    assert "Removed 1 cached domain certificate." in result.out
    assert "nectoproxy cert install" in result.out
    assert store.cached_count() == 0


# -- errors ---------------------------------------------------------------------------------------


def test_unusable_directory_is_one_line_error(cert: RunCert, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    for argv in [(), ("info",), ("--path",), ("export",)]:
        result = cert(*argv, directory=tmp_path / "file" / "certs")
        assert result.code == 1 and result.out == ""
        assert result.err.startswith("nectoproxy cert: error: cannot create")
        assert result.err.count("\n") == 1


def test_corrupt_ca_is_one_line_error(cert: RunCert, certs_dir: Path) -> None:
    assert cert().code == 0
    (certs_dir / "ca-key.pem").write_text("garbage")
    result = cert("info")
    assert result.code == 1 and str(certs_dir / "ca-key.pem") in result.err
    assert result.err.count("\n") == 1
    assert cert("regenerate", "--yes").code == 0  # the way out works on a broken CA
    assert cert("info").code == 0


def test_export_into_missing_directory_is_one_line_error(cert: RunCert, tmp_path: Path) -> None:
    result = cert("export", "--out", str(tmp_path / "missing" / "ca.pem"))
    assert result.code == 1 and "missing" in result.err and result.err.count("\n") == 1
