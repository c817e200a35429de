"""Putting the NectoProxy CA into, and taking it out of, the trust stores clients read.

On Linux two stores matter: the distribution's system store (curl, Python, Go, most CLI tools)
and NSS databases (Chrome and Firefox). Both are changed here, through one :class:`Changes`
object, so that ``--dry-run`` prints exactly what a real run would do. macOS and Windows need
the user's own elevated shell, so for them the exact commands are printed instead of run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from nectoproxy.errors import CertError

NICKNAME = "NectoProxy CA"
NSS_TRUST = "C,,"  # a trusted CA for TLS servers, nothing else
MACOS_KEYCHAIN = "/Library/Keychains/System.keychain"


class TrustStoreError(CertError):
    """A trust store could not be read or changed."""


@dataclass(frozen=True)
class SystemStore:
    """Where one Linux family keeps extra CA anchors and which command rebuilds its bundle."""

    family: str
    anchor: Path
    refresh: tuple[str, ...]


SYSTEM_STORES = {
    "debian": SystemStore(
        "Debian/Ubuntu",
        Path("/usr/local/share/ca-certificates/nectoproxy-ca.crt"),
        ("update-ca-certificates",),
    ),
    "fedora": SystemStore(
        "Fedora/RHEL",
        Path("/etc/pki/ca-trust/source/anchors/nectoproxy-ca.pem"),
        ("update-ca-trust",),
    ),
    "arch": SystemStore(
        "Arch",
        Path("/etc/ca-certificates/trust-source/anchors/nectoproxy-ca.crt"),
        ("update-ca-trust",),
    ),
    "suse": SystemStore(
        "openSUSE",
        Path("/etc/pki/trust/anchors/nectoproxy-ca.pem"),
        ("update-ca-certificates",),
    ),
}
_FAMILY_OF_ID = {
    "debian": "debian", "ubuntu": "debian", "linuxmint": "debian", "pop": "debian",
    "fedora": "fedora", "rhel": "fedora", "centos": "fedora", "rocky": "fedora",
    "almalinux": "fedora", "amzn": "fedora", "arch": "arch", "manjaro": "arch",
    "endeavouros": "arch", "suse": "suse", "opensuse": "suse", "sles": "suse",
}  # fmt: skip


def detect_system_store(os_release: Path = Path("/etc/os-release")) -> SystemStore | None:
    """The system store of this Linux family, from os-release's ID and ID_LIKE, else by layout."""
    ids: list[str] = []
    try:
        for line in os_release.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key in ("ID", "ID_LIKE"):
                ids += value.strip().strip("\"'").lower().split()
    except OSError:
        pass
    for word in ids:
        family = _FAMILY_OF_ID.get(word) or _FAMILY_OF_ID.get(word.split("-")[0])
        if family:
            return SYSTEM_STORES[family]
    for store in SYSTEM_STORES.values():
        if store.anchor.parent.is_dir():
            return store
    return None


def default_nssdb() -> Path:
    """The per-user NSS database Chrome (and Firefox with system certs enabled) read on Linux."""
    return Path.home() / ".pki" / "nssdb"


class Changes:
    """Makes (or, in a dry run, only announces) every change to a trust store."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run

    def run(self, argv: list[str]) -> None:
        if self.dry_run:
            print(f"[dry run] would run: {shlex.join(argv)}")
            return
        query(argv, check=True)

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        if self.dry_run:
            print(f"[dry run] would write {path}")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)

    def remove(self, path: Path) -> None:
        if self.dry_run:
            print(f"[dry run] would remove {path}")
            return
        path.unlink()


def query(argv: list[str], *, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a trust-store tool; with ``check``, a failure becomes one readable TrustStoreError."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise TrustStoreError(f"{argv[0]}: command not found") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {result.returncode}"
        raise TrustStoreError(f"{shlex.join(argv)} failed: {reason}")
    return result


# -- the Linux system store -------------------------------------------------------------------


def install_system(cert: x509.Certificate, changes: Changes, store: SystemStore | None) -> None:
    if store is None:
        print("System trust store: unknown Linux distribution; skipped (use --no-system).")
        return
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if _read(store.anchor) == pem:
        print(f"System trust store ({store.family}): already installed ({store.anchor})")
        return
    if not changes.dry_run and os.geteuid() != 0:
        _print_root_hint(store, install=True)
        return
    if changes.dry_run:
        print(f"System trust store ({store.family}): not installed yet")
    changes.write(store.anchor, pem)
    try:
        changes.run(list(store.refresh))
    except TrustStoreError:
        # Leave no anchor behind that a later run would mistake for a finished install.
        store.anchor.unlink(missing_ok=True)
        raise
    if not changes.dry_run:
        print(f"System trust store ({store.family}): installed {store.anchor}")


def uninstall_system(changes: Changes, store: SystemStore | None) -> None:
    if store is None:
        print("System trust store: unknown Linux distribution; skipped.")
        return
    if not store.anchor.exists():
        print(f"System trust store ({store.family}): not installed ({store.anchor} is absent)")
        return
    if not changes.dry_run and os.geteuid() != 0:
        _print_root_hint(store, install=False)
        return
    if changes.dry_run:
        print(f"System trust store ({store.family}): installed ({store.anchor})")
    changes.remove(store.anchor)
    changes.run(list(store.refresh))
    if not changes.dry_run:
        print(f"System trust store ({store.family}): removed {store.anchor}")


def _print_root_hint(store: SystemStore, *, install: bool) -> None:
    verb = "install" if install else "uninstall"
    print(f"System trust store ({store.family}): needs root; left unchanged. Run:")
    print(f"  sudo nectoproxy cert {verb}")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# -- NSS databases (Chrome, Firefox) ----------------------------------------------------------


def install_nss(cert: x509.Certificate, ca_path: Path, nssdb: Path, changes: Changes) -> None:
    db = f"sql:{nssdb}"
    present = _nss_certs(nssdb)
    if present == [cert]:
        print(f"NSS database {nssdb}: already installed as {NICKNAME!r}")
        return
    if changes.dry_run:
        state = "holds an older NectoProxy CA" if present else "not installed yet"
        print(f"NSS database {nssdb}: {state}")
    if not (nssdb / "cert9.db").exists():
        if not changes.dry_run:
            nssdb.mkdir(mode=0o700, parents=True, exist_ok=True)
        changes.run(["certutil", "-N", "-d", db, "--empty-password"])
    for _ in present:  # an older NectoProxy CA (before `cert regenerate`) goes first
        changes.run(["certutil", "-D", "-d", db, "-n", NICKNAME])
    changes.run(["certutil", "-A", "-d", db, "-n", NICKNAME, "-t", NSS_TRUST, "-i", str(ca_path)])
    if not changes.dry_run:
        replaced = " (replaced an older one)" if present else ""
        print(f"NSS database {nssdb}: installed {NICKNAME!r}{replaced}")


def uninstall_nss(nssdb: Path, changes: Changes) -> None:
    present = _nss_certs(nssdb)
    if not present:
        print(f"NSS database {nssdb}: not installed")
        return
    if changes.dry_run:
        print(f"NSS database {nssdb}: installed as {NICKNAME!r}")
    for _ in present:
        changes.run(["certutil", "-D", "-d", f"sql:{nssdb}", "-n", NICKNAME])
    if not changes.dry_run:
        print(f"NSS database {nssdb}: removed {NICKNAME!r}")


def _nss_certs(nssdb: Path) -> list[x509.Certificate]:
    """The certificates stored under our nickname (several if someone added duplicates)."""
    if not (nssdb / "cert9.db").exists():
        return []
    result = query(["certutil", "-L", "-d", f"sql:{nssdb}", "-n", NICKNAME, "-a"])
    if result.returncode != 0:
        return []
    try:
        return x509.load_pem_x509_certificates(result.stdout.encode())
    except ValueError:
        return []


def firefox_profiles() -> list[Path]:
    """Firefox profiles keep their own NSS databases, which the user may want to trust too."""
    home = Path.home()
    roots = [
        home / ".mozilla" / "firefox",
        home / "snap" / "firefox" / "common" / ".mozilla" / "firefox",
    ]
    return sorted(db.parent for root in roots for db in root.glob("*/cert9.db"))


# -- macOS and Windows: print the commands ------------------------------------------------------


def manual_steps(platform: str, ca_path: Path, sha1: str | None, *, install: bool) -> list[str]:
    """The exact commands a macOS or Windows user runs to (un)trust the CA."""
    thumbprint = sha1.replace(":", "") if sha1 else None
    if platform == "darwin":
        if install:
            trusted = f"-d -r trustRoot -k {MACOS_KEYCHAIN} {shlex.quote(str(ca_path))}"
            return [f"sudo security add-trusted-cert {trusted}"]
        selector = f"-Z {thumbprint}" if thumbprint else f"-c {shlex.quote(NICKNAME)}"
        return [f"sudo security delete-certificate {selector} {MACOS_KEYCHAIN}"]
    if install:
        return [
            f'certutil -addstore -user Root "{ca_path}"',
            f'Import-Certificate -FilePath "{ca_path}" -CertStoreLocation Cert:\\CurrentUser\\Root',
        ]
    if thumbprint is None:
        return [f'certutil -delstore -user Root "{NICKNAME}"']
    return [
        f"certutil -delstore -user Root {thumbprint}",
        f"Get-ChildItem Cert:\\CurrentUser\\Root\\{thumbprint} | Remove-Item",
    ]


def current_platform() -> str:
    """``darwin``, ``win32`` or ``linux`` (any other Unix is handled like Linux)."""
    return sys.platform if sys.platform in ("darwin", "win32") else "linux"


# -- putting it together ------------------------------------------------------------------------


def change_trust(
    cert: x509.Certificate | None,
    ca_path: Path,
    *,
    install: bool,
    system: bool = True,
    nssdb: Path | None = None,
    dry_run: bool = False,
) -> None:
    """Install (or uninstall) the CA everywhere this platform lets us, and say what happened.

    Installing and uninstalling are idempotent: a store that already is as asked is reported
    and left alone. ``cert`` may be None only for uninstalling (the CA file may be gone).
    """
    platform = current_platform()
    if platform != "linux":
        _print_manual_steps(platform, cert, ca_path, install=install)
        return
    changes = Changes(dry_run)
    store = detect_system_store() if system else None
    if not system:
        print("System trust store: skipped (--no-system)")
    elif install:
        assert cert is not None
        install_system(cert, changes, store)
    else:
        uninstall_system(changes, store)
    explicit_nssdb = nssdb is not None
    nssdb = nssdb or default_nssdb()
    if shutil.which("certutil") is None:
        hint = "install libnss3-tools (Debian/Ubuntu) or nss-tools (Fedora, Arch, openSUSE)"
        if explicit_nssdb:
            raise TrustStoreError(f"certutil not found, needed for --nssdb: {hint}")
        print(f"NSS database (Chrome, Firefox): skipped, certutil not found; {hint}")
    elif install:
        assert cert is not None
        install_nss(cert, ca_path, nssdb, changes)
    else:
        uninstall_nss(nssdb, changes)
    if install and not explicit_nssdb:
        for profile in firefox_profiles():
            print(f"Firefox profile {profile} has its own certificate database; to trust it run:")
            print(f"  nectoproxy cert install --no-system --nssdb {shlex.quote(str(profile))}")
    if dry_run:
        print("Dry run: nothing was changed.")


def _print_manual_steps(
    platform: str, cert: x509.Certificate | None, ca_path: Path, *, install: bool
) -> None:
    sha1 = cert.fingerprint(hashes.SHA1()).hex(":").upper() if cert else None
    system, shell = ("macOS", "Terminal") if platform == "darwin" else ("Windows", "PowerShell")
    action = "trust the NectoProxy CA" if install else "remove the NectoProxy CA"
    print(f"On {system}, NectoProxy does not change the trust store itself. To {action}, run")
    print(f"one of these in {shell} (nothing was changed):")
    for step in manual_steps(platform, ca_path, sha1, install=install):
        print(f"  {step}")
    print(
        "Firefox keeps its own certificates: Settings > Privacy & Security > Certificates >"
        f" View Certificates > Authorities > {'Import' if install else 'Delete'} ({NICKNAME})."
    )
