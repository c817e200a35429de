"""HTTP/2 throughput (issue 16): 50 concurrent streams on one connection through the proxy,
against the same load over HTTP/1.1 keep-alive (50 connections), and against mitmproxy in the
same run. (Named ``http2``, not ``h2``: a script run from this folder would import it for the
``h2`` library.)

    python -m benchmarks.http2 [--requests 20000] [--pin] [--repeat 3] [--mitmdump PATH]

The load generator is h2load (Debian's nghttp2-client): ``h2load -c1 -m50`` for HTTP/2 and
``h2load --h1 -c50`` for HTTP/1.1, ``GET /1k``, every run bounded by ``--requests`` and by
``--timeout`` seconds. h2load has no CONNECT support, so each proxy listens in reverse mode
(``reverse:https://ORIGIN@PORT``): the same intercepted TLS (a leaf from the proxy's CA) and the
same per-flow engine as a CONNECT tunnel, without the CONNECT. The origin is nginx with two
TLS listeners: one that offers h2 (for the HTTP/2 rows) and one that offers only http/1.1 (for
the HTTP/1.1 rows), so each row is one protocol end to end.

mitmproxy is a ``mitmdump`` found by ``--mitmdump``, the ``MITMDUMP`` environment variable or
the PATH (its own virtual environment: it pins its own dependencies); without one its rows are
skipped with a note. Figures: req/s (h2load's), and the proxy process's CPU time (user + system)
per 1,000 requests, the figure least disturbed by other load on the machine. See
benchmarks/README.md. Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import origin, procs

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout")
_PROTOCOL = re.compile(r"Application protocol: (\S+)")


@dataclass
class Row:
    proxy: str
    protocol: str
    load: str
    requests: int = 0
    succeeded: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    cpu: float | None = None
    negotiated: str = ""
    note: str = ""

    @property
    def cpu_per_1k(self) -> float | None:
        if self.cpu is None or not self.succeeded:
            return None
        return self.cpu / self.succeeded * 1000


def nginx_config(files: origin.OriginFiles, h2_port: int, h1_port: int) -> Path:
    """origin.nginx_config's nginx, with its HTTPS listener offering h2 and a second one that
    offers only http/1.1 (nginx 1.22: ``listen ... ssl http2``)."""
    path = origin.nginx_config(files, procs.free_port(), h2_port)
    text = path.read_text()
    text = text.replace(f"listen 127.0.0.1:{h2_port} ssl reuseport",
                        f"listen 127.0.0.1:{h2_port} ssl http2 reuseport")
    h1_server = f"""    server {{
        listen 127.0.0.1:{h1_port} ssl;
        ssl_certificate {files.cert};
        ssl_certificate_key {files.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {files.directory}/www;
    }}
}}
"""
    text = text.rstrip().removesuffix("}") + h1_server
    path.write_text(text)
    return path


def h2load(port: int, protocol: str, requests: int, streams: int, timeout: float,
           core: int | None) -> tuple[str, str]:
    """Run h2load against 127.0.0.1:port; (its output, a note if it failed)."""
    if protocol == "h2":
        shape = ["-c1", f"-m{streams}"]
    else:
        shape = ["--h1", f"-c{streams}", "-m1"]
    command = procs.pinned(["h2load", "-t1", *shape, f"-n{requests}",
                            f"https://127.0.0.1:{port}/1k"], core)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return "", f"stopped after {timeout:g}s"
    if done.returncode != 0:
        return done.stdout, f"h2load exited with {done.returncode}: {done.stderr.strip()[:200]}"
    return done.stdout, ""


def measure(row: Row, port: int, pid: int | None, args: argparse.Namespace) -> Row:
    load_core = 1 if args.pin else None
    # Warm up: the leaf minted, the origin connections open, the code paths hot.
    h2load(port, row.protocol, min(2000, args.requests), args.streams, args.timeout, load_core)
    before = procs.cpu_seconds(pid) if pid else 0.0
    output, note = h2load(port, row.protocol, args.requests, args.streams, args.timeout,
                          load_core)
    after = procs.cpu_seconds(pid) if pid else 0.0
    row.note = note
    finished, counts = _FINISHED.search(output), _REQUESTS.search(output)
    if finished and counts:
        scale = 1e-3 if finished.group(2) == "ms" else 1.0
        row.seconds, row.rate = float(finished.group(1)) * scale, float(finished.group(3))
        row.requests, row.succeeded = int(counts.group(1)), int(counts.group(3))
        failed = sum(int(counts.group(i)) for i in (4, 5, 6))
        if failed:
            row.note = (row.note + f" {failed} failed/errored/timed out").strip()
    negotiated = _PROTOCOL.search(output)
    row.negotiated = negotiated.group(1) if negotiated else ""
    if pid:
        row.cpu = after - before
    return row


def mitmdump_binary(given: str | None) -> str | None:
    candidate = given or os.environ.get("MITMDUMP") or shutil.which("mitmdump")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


class Run:
    def __init__(self, args: argparse.Namespace, tmp: Path, children: procs.Children) -> None:
        self.args = args
        self.tmp = tmp
        self.children = children
        self.proxy_core = 0 if args.pin else None
        self.files = origin.make_files(tmp / "origin")
        self.h2_port, self.h1_port = procs.free_port(), procs.free_port()

    def start_origin(self) -> None:
        nginx = origin.nginx_binary()
        if nginx is None:
            raise SystemExit("benchmarks/http2.py needs nginx (apt-get install nginx)")
        config = nginx_config(self.files, self.h2_port, self.h1_port)
        process = self.children.start(
            procs.pinned(origin.nginx_command(nginx, self.files, config),
                         1 if self.args.pin else None))
        procs.wait_for_port(self.h2_port, 10, process)
        procs.wait_for_port(self.h1_port, 10, process)

    def start_nectoproxy(self) -> tuple[int, int, subprocess.Popen[bytes]]:
        """NectoProxy with a reverse listener per origin port: (h2 port, h1 port, process)."""
        h2, h1 = procs.free_port(), procs.free_port()
        command = [sys.executable, "-m", "nectoproxy", "--no-config", "--listen-host",
                   "127.0.0.1", "--listen-port", str(procs.free_port()),
                   "--mode", f"reverse:https://127.0.0.1:{self.h2_port}@{h2}",
                   "--mode", f"reverse:https://127.0.0.1:{self.h1_port}@{h1}",
                   "--certs-dir", str(self.tmp / "certs"), "--upstream-ca", str(self.files.ca),
                   "-q", "--no-entry-points", "--no-web"]
        log = open(self.tmp / "nectoproxy.log", "a")  # noqa: SIM115 (lives as the proxy does)
        process = self.children.start(
            procs.pinned(command, self.proxy_core), stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "NECTOPROXY_HOME": str(self.tmp / "home")})
        procs.wait_for_port(h2, 60, process)
        procs.wait_for_port(h1, 60, process)
        return h2, h1, process

    def start_mitmproxy(self, mitmdump: str) -> tuple[int, int, subprocess.Popen[bytes]]:
        h2, h1 = procs.free_port(), procs.free_port()
        command = [mitmdump, "-q", "--set", f"confdir={self.tmp / 'mitmproxy'}",
                   "--set", f"ssl_verify_upstream_trusted_ca={self.files.ca}",
                   "--set", "flow_detail=0",
                   "--mode", f"reverse:https://127.0.0.1:{self.h2_port}@127.0.0.1:{h2}",
                   "--mode", f"reverse:https://127.0.0.1:{self.h1_port}@127.0.0.1:{h1}"]
        log = open(self.tmp / "mitmproxy.log", "a")  # noqa: SIM115 (lives as the proxy does)
        process = self.children.start(procs.pinned(command, self.proxy_core), stdout=log,
                                      stderr=subprocess.STDOUT)
        procs.wait_for_port(h2, 60, process)
        procs.wait_for_port(h1, 60, process)
        return h2, h1, process

    def rows(self) -> list[Row]:
        args = self.args
        rows: list[Row] = []
        h2_load, h1_load = f"1 connection, {args.streams} streams", \
            f"{args.streams} connections, keep-alive"
        for protocol, port, load in (("h2", self.h2_port, h2_load),
                                     ("http/1.1", self.h1_port, h1_load)):
            rows.append(measure(Row("no proxy", protocol, load), port, None, args))
        h2, h1, process = self.start_nectoproxy()
        rows.append(measure(Row("NectoProxy", "h2", h2_load), h2, process.pid, args))
        rows.append(measure(Row("NectoProxy", "http/1.1", h1_load), h1, process.pid, args))
        self.children.stop(process)
        mitmdump = mitmdump_binary(args.mitmdump)
        if mitmdump is None:
            note = "skipped: no mitmdump (--mitmdump PATH or MITMDUMP)"
            rows += [Row("mitmproxy", "h2", h2_load, note=note),
                     Row("mitmproxy", "http/1.1", h1_load, note=note)]
        else:
            h2, h1, process = self.start_mitmproxy(mitmdump)
            rows.append(measure(Row("mitmproxy", "h2", h2_load), h2, process.pid, args))
            rows.append(measure(Row("mitmproxy", "http/1.1", h1_load), h1, process.pid, args))
            self.children.stop(process)
        return rows


def table(rows: list[Row]) -> str:
    lines = ["| proxy | protocol | load | requests | req/s | proxy CPU s/1k req | ALPN | note |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        cpu = row.cpu_per_1k
        lines.append(f"| {row.proxy} | {row.protocol} | {row.load} | {row.succeeded:,} | "
                     f"{row.rate:,.0f} | {'-' if cpu is None else f'{cpu:.3f}'} | "
                     f"{row.negotiated or '-'} | {row.note} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000,
                        help="requests per measured run (default 20000)")
    parser.add_argument("--streams", type=int, default=50,
                        help="concurrent streams (h2) / connections (HTTP/1.1); default 50")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one h2load run may take before it is stopped")
    parser.add_argument("--repeat", type=int, default=1, help="measure everything N times")
    parser.add_argument("--pin", action="store_true",
                        help="proxy on core 0; nginx and h2load on core 1 (taskset)")
    parser.add_argument("--mitmdump", metavar="PATH", help="mitmproxy's mitmdump to compare")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("benchmarks/http2.py needs h2load (apt-get install nghttp2-client)")
    procs.install_sigterm_handler()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="nectoproxy-h2-bench-") as tmp, \
            procs.Children() as children:
        run = Run(args, Path(tmp), children)
        run.start_origin()
        for repeat in range(args.repeat):
            rows = run.rows()
            print(f"\n{started}, repeat {repeat + 1} of {args.repeat}, GET /1k, "
                  f"{args.requests:,} requests per row, load average now "
                  f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
            print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
