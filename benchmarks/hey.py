"""Running hey (Debian's ``hey``, a Go load generator) and reading its report.

hey speaks CONNECT to an HTTP proxy for ``https://`` targets (Go's transport), keeps its
connections alive and costs a fraction of the CPU of the Python load generator: on a 2-core
machine, where the load generator shares the cores with the proxy (and with capture's writer
process), that leaves the measurement to the proxy. It does not verify TLS certificates.
"""

from __future__ import annotations

import re
import shutil
from typing import Any


def hey_binary() -> str | None:
    return shutil.which("hey")


def command(binary: str, url: str, connections: int, seconds: float,
            proxy: str | None = None) -> list[str]:
    cmd = [binary, "-z", f"{max(1, round(seconds))}s", "-c", str(connections), "-t", "10",
           "-disable-compression"]
    if proxy is not None:
        cmd += ["-x", proxy]
    return [*cmd, url]


def parse(output: str) -> dict[str, Any]:
    """The figures of a hey summary, in the load generator's JSON shape."""
    result: dict[str, Any] = {"mode": "hey", "errors": 0, "error_kinds": {}}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(m[1])
    if m := re.search(r"Total:\s+([\d.]+) secs", output):
        result["seconds"] = float(m[1])
    ok = sum(int(n) for n in re.findall(r"\[2\d\d\]\s+(\d+) responses", output))
    bad = sum(int(n) for n in re.findall(r"\[[013-9]\d\d\]\s+(\d+) responses", output))
    result["requests"] = ok + bad
    if bad:
        result["error_kinds"]["non-2xx"] = bad
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}% in ([\d.]+) secs", output, re.MULTILINE):
            result[key] = round(float(m[1]) * 1000, 3)
    errors = output.partition("Error distribution:")[2]
    for count, kind in re.findall(r"\[(\d+)\]\s+(.+)", errors):
        result["error_kinds"][kind.strip()[:80]] = int(count)
    result["errors"] = sum(result["error_kinds"].values())
    return result
