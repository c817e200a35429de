"""Running wrk (when installed) and reading its report.

wrk has no CONNECT support, so it only drives plain HTTP through the proxy (absolute-form
request targets set from a Lua script) and HTTPS straight to the origin.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def proxy_script(directory: Path, origin_port: int, path: str) -> Path:
    """A Lua script that makes wrk send ``GET http://127.0.0.1:PORT/path`` to the proxy."""
    script = directory / f"wrk-proxy-{origin_port}.lua"
    script.write_text(f'wrk.path = "http://127.0.0.1:{origin_port}{path}"\n'
                      f'wrk.headers["Host"] = "127.0.0.1:{origin_port}"\n')
    return script


def command(binary: str, url: str, connections: int, seconds: float,
            script: Path | None = None) -> list[str]:
    cmd = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "10s"]
    if script is not None:
        cmd += ["-s", str(script)]
    return [*cmd, url]


def _ms(text: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return round(float(match[1]) * _UNITS[match[2]], 3) if match else None


def parse(output: str) -> dict[str, Any]:
    """The figures of a ``wrk --latency`` report, in the load generator's JSON shape."""
    result: dict[str, Any] = {"mode": "wrk", "errors": 0, "error_kinds": {}}
    if m := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output):
        result["requests"] = int(m[1])
        result["seconds"] = float(m[2]) * _UNITS[m[3]] / 1000
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(m[1])
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", output, re.MULTILINE):
            result[key] = _ms(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      output):
        for kind, count in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(count):
                result["error_kinds"][f"socket {kind}"] = int(count)
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        result["error_kinds"]["non-2xx/3xx"] = int(m[1])
    result["errors"] = sum(result["error_kinds"].values())
    if m := re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", output):
        scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m[2]]
        result["mb_per_s"] = round(float(m[1]) * scale / 1e6, 1)
    if "rps" not in result:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    return result
