"""Log every finished flow as one JSON line (JSON Lines), for jq, pandas or a log shipper.

Run it::

    nectoproxy -s examples/jsonl_log.py

Options, in nectoproxy.toml::

    [plugins.jsonl_log]
    path = "logs/flows.jsonl"   # default "flows.jsonl"; relative to nectoproxy.toml (or the
                                # current directory); lines are appended

Each line looks like this (``status`` is null and ``error`` set when a flow failed)::

    {"time": "2024-05-01T12:00:00.123Z", "client": "127.0.0.1:51234", "method": "GET",
     "url": "http://example.org/", "status": 200, "request_size": 0, "response_size": 1256,
     "duration_ms": 84.2, "request_ms": 0.3, "wait_ms": 80.1, "response_ms": 3.8,
     "server": "93.184.215.14:80", "error": null}

``duration_ms`` runs from the request's first byte to the response's last; ``wait_ms`` is the
time the origin took to start answering. Sizes are body bytes as relayed. Each line is flushed
as it is written, so ``tail -f flows.jsonl | jq .`` follows the traffic live.

Only ``on_complete`` and ``on_error`` are implemented, so bodies are never buffered for this
plugin: logging costs almost nothing even for large downloads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from nectoproxy import Config, ConfigError, Flow

log = logging.getLogger("nectoproxy.examples.jsonl_log")

path: Path = Path("flows.jsonl")
_file: IO[str] | None = None


def on_configure(config: Config, options: Mapping[str, Any]) -> None:
    global path
    unknown = sorted(set(options) - {"path"})
    if unknown:
        raise ConfigError(f"[plugins.jsonl_log] unknown key {unknown[0]!r} (known: path)")
    value = options.get("path", "flows.jsonl")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[plugins.jsonl_log] path: expected a file name, got {value!r}")
    base = Path(config.source).parent if config.source else Path.cwd()
    path = base / Path(value).expanduser()


def on_start() -> None:
    global _file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _file = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"[plugins.jsonl_log] path: cannot open {path}: "
                          f"{exc.strerror or exc}") from None
    log.info("jsonl_log: writing flows to %s", path)


def on_stop() -> None:
    global _file
    if _file is not None:
        _file.close()
        _file = None


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000, 1)


def record(flow: Flow, error: str | None) -> dict[str, Any]:
    """The JSON object logged for ``flow``."""
    started = datetime.fromtimestamp(flow.timestamp_start, UTC)
    client = flow.client_address
    server = flow.server_address
    response = flow.response
    return {
        "time": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client": f"{client[0]}:{client[1]}",
        "method": flow.request.method,
        "url": flow.request.url,
        "status": response.status_code if response is not None else None,
        "request_size": flow.request_body_size,
        "response_size": flow.response_body_size,
        "duration_ms": _ms(flow.timestamp_start, flow.timestamp_end),
        "request_ms": _ms(flow.timestamp_start, flow.timestamp_request_end),
        "wait_ms": _ms(flow.timestamp_request_end, flow.timestamp_response_start),
        "response_ms": _ms(flow.timestamp_response_start, flow.timestamp_end),
        "server": f"{server[0]}:{server[1]}" if server else None,
        "error": error,
    }


def _write(line: dict[str, Any]) -> None:
    # A line this size costs microseconds to write and flush to a local file: no thread needed.
    if _file is None:
        return
    _file.write(json.dumps(line, ensure_ascii=False) + "\n")
    _file.flush()


def on_complete(flow: Flow) -> None:
    _write(record(flow, None))


def on_error(flow: Flow, error: str) -> None:
    _write(record(flow, error))
