"""Other proxies measured beside NectoProxy (issue 17): proxy.py and mitmproxy.

Each peer gets a virtual environment of its own under a cache folder outside the repository
(``$XDG_CACHE_HOME/nectoproxy-bench/peers/NAME-VERSION-pyX.Y``, else ``~/.cache/...``), made
with a Python that the peer supports (the bench's own when it fits, else ``python3.N`` on PATH
or under pyenv) and filled with ``pip install NAME==VERSION``; a later run reuses it. A peer
whose Python or install is not available (no network, say) is skipped with a note.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    #: The oldest Python the pinned version installs on.
    min_python: tuple[int, int]
    #: The command its package installs, the one the bench starts.
    executable: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


PEERS: dict[str, Peer] = {
    "proxy.py": Peer("proxy.py", "2.4.10", (3, 8), "proxy"),
    "mitmproxy": Peer("mitmproxy", "12.3.1", (3, 12), "mitmdump"),
}


def parse_peers(text: str) -> list[Peer]:
    """``--peers``: "" (none), "all", or comma-separated names of :data:`PEERS`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(PEERS.values())
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers: {', '.join(unknown)} (known: {', '.join(PEERS)}, all)")
    return [PEERS[n] for n in dict.fromkeys(names)]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nectoproxy-bench" / "peers"


def parse_version(text: str) -> tuple[int, int] | None:
    """``"3 12"`` (what :func:`python_version` prints) -> (3, 12)."""
    match = re.fullmatch(r"\s*(\d+)\s+(\d+)\s*", text)
    return (int(match[1]), int(match[2])) if match else None


def python_version(python: str) -> tuple[int, int] | None:
    """The version a Python executable reports, or None when it does not run (pyenv shims of
    versions not selected exit with an error)."""
    try:
        done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(done.stdout) if done.returncode == 0 else None


def python_candidates(minimum: tuple[int, int], newest_minor: int = 14) -> list[str]:
    """Pythons to try, the bench's own first, then ``python3.N`` on PATH, then pyenv's."""
    found: list[str] = []
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if base.exists():
        found.append(str(base))
    found.append(sys.executable)
    minors = range(minimum[1], newest_minor + 1) if minimum[0] == 3 else range(0)
    for minor in minors:
        if path := shutil.which(f"python3.{minor}"):
            found.append(path)
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for minor in minors:
        found += sorted(str(p) for p in pyenv.glob(f"3.{minor}.*/bin/python3"))
    return list(dict.fromkeys(found))


def find_python(minimum: tuple[int, int], candidates: Iterable[str] | None = None
                ) -> tuple[str, tuple[int, int]] | None:
    """The first candidate that runs and is at least ``minimum``."""
    for python in candidates if candidates is not None else python_candidates(minimum):
        version = python_version(python)
        if version is not None and version >= minimum:
            return python, version
    return None


def ensure(peer: Peer, root: Path | None = None, timeout: float = 900) -> tuple[Path | None, str]:
    """The bin folder of the peer's venv (made and installed if needed), with a note; or
    (None, why not)."""
    found = find_python(peer.min_python)
    if found is None:
        return None, (f"skipped: {peer.label} needs Python >= {'.'.join(map(str, peer.min_python))}"
                      ", none found (python3.N on PATH or under pyenv)")
    python, version = found
    venv = (root or cache_root()) / f"{peer.name}-{peer.version}-py{version[0]}.{version[1]}"
    marker = venv / ".nectoproxy-bench-installed"
    binary = venv / "bin" / peer.executable
    note = f"{peer.label} on Python {version[0]}.{version[1]} ({venv})"
    if marker.exists() and marker.read_text().strip() == peer.requirement and binary.exists():
        return venv / "bin", note
    print(f"peers: installing {peer.requirement} into {venv} ...", flush=True)
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, text=True, timeout=120)
        done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                               peer.requirement], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"skipped: {peer.label}: cannot make its venv ({exc})"
    if done.returncode != 0 or not binary.exists():
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])[-300:]
        return None, f"skipped: {peer.label}: pip install failed ({tail})"
    marker.write_text(peer.requirement + "\n")
    return venv / "bin", note


# -- how each peer is started -------------------------------------------------------------------

@dataclass(frozen=True)
class Ca:
    """An interception CA for proxy.py: its key, its certificate, and the key of the leaves."""

    key: Path
    cert: Path
    signing_key: Path


def make_proxy_py_ca(directory: Path) -> Ca:
    """A throw-away CA made with the openssl command (proxy.py mints its leaves with it too)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Ca(directory / "ca-key.pem", directory / "ca-cert.pem", directory / "ca-signing-key.pem")
    for key in (ca.key, ca.signing_key):
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True, timeout=60)
    subprocess.run(["openssl", "req", "-new", "-x509", "-days", "30", "-key", str(ca.key),
                    "-out", str(ca.cert), "-subj", "/CN=proxy.py bench CA"], check=True,
                   capture_output=True, timeout=60)
    return ca


def proxy_py_command(bin_dir: Path, port: int, upstream_ca: Path, ca: Ca | None,
                     cert_dir: Path, single: bool) -> list[str]:
    """proxy.py (threadless, its Linux default). ``single``: one acceptor, which serves its
    connections in its own process (``--local-executor``, default 1), for a pinned core;
    otherwise its defaults: one acceptor per core. ``ca``: intercept TLS, verifying the origin
    against ``upstream_ca`` (``--ca-file``)."""
    command = [str(bin_dir / "proxy"), "--hostname", "127.0.0.1", "--port", str(port),
               "--log-level", "ERROR", "--ca-file", str(upstream_ca)]
    if single:
        command += ["--num-acceptors", "1", "--num-workers", "1"]
    if ca is not None:
        cert_dir.mkdir(parents=True, exist_ok=True)
        command += ["--ca-key-file", str(ca.key), "--ca-cert-file", str(ca.cert),
                    "--ca-signing-key-file", str(ca.signing_key), "--ca-cert-dir", str(cert_dir)]
    return command


def mitmdump_command(bin_dir: Path, port: int, upstream_ca: Path, confdir: Path) -> list[str]:
    """mitmdump, quiet, its CA in ``confdir``, verifying the origin against ``upstream_ca``.
    Its default ``connection_strategy`` (eager: it connects upstream when CONNECT arrives,
    as NectoProxy does) is kept."""
    confdir.mkdir(parents=True, exist_ok=True)
    return [str(bin_dir / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "-q", "--set", f"confdir={confdir}", "--set",
            f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
