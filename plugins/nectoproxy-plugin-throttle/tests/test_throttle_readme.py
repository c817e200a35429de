"""The nectoproxy.toml example in README.md, verbatim, through a real proxy."""

from __future__ import annotations

import hashlib
import re
import time
import tomllib
from pathlib import Path
from typing import Any

from nectoproxy_plugin_throttle import SIMULATED_HEADER, Throttle
from throttle_testutil import Observer, captured_log

from nectoproxy.config import config_from_dict
from nectoproxy.testing.origin import pattern_sha256

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> dict[str, Any]:
    """The first ```toml block of the "Configure" section, parsed."""
    section = README.read_text(encoding="utf-8").split("## Configure", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "README.md has no toml example under ## Configure"
    return tomllib.loads(match.group(1))


def readme_log_lines() -> list[str]:
    section = README.read_text(encoding="utf-8").split("At start-up the proxy logs", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line.removeprefix("[info] ") for line in block.splitlines()]


def test_readme_example_is_a_valid_configuration():
    config = config_from_dict(readme_example())
    assert set(config.plugin_options) == {"throttle"}


def test_readme_example_runs(make_proxy, origin, tls_origin):
    example = readme_example()
    observer = Observer()
    size = 256 * 1024
    with captured_log() as messages, \
            make_proxy(plugins=[Throttle(), observer], config=example) as proxy, \
            proxy.client() as client:
        started = time.monotonic()
        download = client.get(f"{tls_origin.url}/bytes/{size}")
        elapsed = time.monotonic() - started
        offline = client.get("http://api.offline.test/v1/items")
        offline_tls = client.get("https://img.offline.test/logo.png")
        echoed = client.post(origin.url + "/upload", content=b"z" * 4096)
    # 127.0.0.1 matches no rule: the default, Regular 4G (1152 KiB/s, 50 ± 10 ms).
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == pattern_sha256(size)
    assert elapsed >= 0.04 + 0.15  # latency, then 256 KiB at 1152 KiB/s less one slice
    assert echoed.json()["sha256"] == hashlib.sha256(b"z" * 4096).hexdigest()
    # *.offline.test: Offline, and loss_mode = "503" from the table; nothing is resolved.
    for response in (offline, offline_tls):
        assert response.status_code == 503
        assert response.headers[SIMULATED_HEADER] == "offline"
    profiles = [r["profile"] for r in observer.records]
    assert profiles == ["Regular 4G", "Offline", "Offline", "Regular 4G"]
    assert all(40 <= observer.records[i]["latency_ms"] <= 60 for i in (0, 3))
    assert messages == readme_log_lines()  # the start-up lines the README shows
