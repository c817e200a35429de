"""Answer API requests from a JSON file, without contacting the origin.

Run it::

    nectoproxy -s examples/mock_api.py

Every request whose path matches an entry of the mock file is answered by the proxy itself;
everything else goes to the origin as usual. The file (default: ``mock_api.json`` beside this
script) maps ``"METHOD /path"`` or just ``"/path"`` (any method) to a response::

    {
      "GET /api/users": {"body": [{"id": 1, "name": "Ada"}]},
      "POST /api/login": {"status": 401, "body": {"error": "bad password"}},
      "/api/health": {"body": "ok", "headers": {"Cache-Control": "no-store"}},
      "GET /api/users/*": {"status": 404, "body": {"error": "no such user"}}
    }

``body`` may be a JSON value (sent as application/json) or a string (sent as text/plain unless
``headers`` sets a Content-Type); ``status`` defaults to 200. Paths are matched without their
query string; exact paths win over ``*`` patterns, which are tried in file order.

Options, in nectoproxy.toml::

    [plugins.mock_api]
    file = "mocks/api.json"        # relative to nectoproxy.toml (or the current directory)
    hosts = ["api.example.com"]    # only mock these hosts (default: every host)
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nectoproxy import Config, ConfigError, Flow, Response

log = logging.getLogger("nectoproxy.examples.mock_api")
DEFAULT_FILE = Path(__file__).with_name("mock_api.json")


@dataclass(frozen=True)
class Mock:
    method: str | None  # None: any method
    path: str
    status: int
    body: Any
    headers: dict[str, str]

    def response(self) -> Response:
        body, headers = self.body, dict(self.headers)
        if not isinstance(body, (str, dict, list)):  # numbers, true/false, null
            body = json.dumps(body)
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        response = Response.make(self.status, body, headers)
        response.headers["X-Mocked-By"] = "nectoproxy mock_api"
        return response


exact: dict[tuple[str | None, str], Mock] = {}
patterns: list[Mock] = []
hosts: frozenset[str] = frozenset()


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"[plugins.mock_api] {where}: {message}")


def parse_mocks(data: Any, where: str) -> list[Mock]:
    """Validate the mock file's content; errors name the file and the entry."""
    if not isinstance(data, dict):
        raise _fail(where, "expected a JSON object mapping \"METHOD /path\" to responses")
    mocks = []
    for key, spec in data.items():
        method, _, path = key.strip().rpartition(" ")
        if not path.startswith("/"):
            raise _fail(where, f"{key!r}: expected \"METHOD /path\" or \"/path\"")
        if not isinstance(spec, dict) or set(spec) - {"status", "body", "headers"}:
            raise _fail(where, f"{key!r}: expected an object with status, body and headers")
        status = spec.get("status", 200)
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise _fail(where, f"{key!r}: status must be a number from 200 to 599")
        headers = spec.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise _fail(where, f"{key!r}: headers must map names to strings")
        body = spec.get("body", "")
        mocks.append(Mock(method.strip().upper() or None, path, status, body, headers))
    return mocks


def on_configure(config: Config, options: Mapping[str, Any]) -> None:
    global exact, patterns, hosts
    unknown = sorted(set(options) - {"file", "hosts"})
    if unknown:
        raise _fail(unknown[0], "unknown key (known: file, hosts)")
    file = options.get("file")
    if file is None:
        path = DEFAULT_FILE
    elif isinstance(file, str):
        base = Path(config.source).parent if config.source else Path.cwd()
        path = base / Path(file).expanduser()
    else:
        raise _fail("file", f"expected a path, got {file!r}")
    wanted = options.get("hosts", [])
    if not isinstance(wanted, list) or not all(isinstance(h, str) for h in wanted):
        raise _fail("hosts", f"expected a list of host names, got {wanted!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail("file", f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _fail("file", f"{path} is not valid JSON: {exc}") from None
    mocks = parse_mocks(data, str(path))
    exact = {(m.method, m.path): m for m in mocks if "*" not in m.path}
    patterns = [m for m in mocks if "*" in m.path]
    hosts = frozenset(h.lower() for h in wanted)
    log.info("mock_api: %d mocked endpoints from %s", len(mocks), path)


def find(method: str, path: str) -> Mock | None:
    for key in ((method, path), (None, path)):
        if key in exact:
            return exact[key]
    for mock in patterns:
        if mock.method in (None, method) and fnmatch.fnmatchcase(path, mock.path):
            return mock
    return None


def on_request(flow: Flow) -> None:
    request = flow.request
    if hosts and request.host not in hosts:
        return
    mock = find(request.method, request.pathname)
    if mock is not None:
        flow.response = mock.response()
        flow.metadata["mock_api"] = f"{mock.method or '*'} {mock.path}"
