"""The logic of benchmarks/peers.py and of the side-by-side table (issue 17).

No network, no peer installed: finding a Python, naming the venvs, the peers' command lines, and
the median [min-max] table.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import peers
import report


def test_parse_peers() -> None:
    assert peers.parse_peers("") == []
    assert [p.name for p in peers.parse_peers("all")] == ["proxy.py", "mitmproxy"]
    assert [p.name for p in peers.parse_peers("mitmproxy, proxy.py,mitmproxy")] == \
        ["mitmproxy", "proxy.py"]
    with pytest.raises(ValueError, match="unknown peers: squid"):
        peers.parse_peers("proxy.py,squid")
    assert peers.PEERS["mitmproxy"].requirement == "mitmproxy==12.3.1"
    assert peers.PEERS["mitmproxy"].min_python == (3, 12)


def test_parse_version() -> None:
    assert peers.parse_version("3 12\n") == (3, 12)
    assert peers.parse_version("pyenv: python3.13: command not found") is None


def test_find_python(tmp_path: Path) -> None:
    here = sys.version_info[:2]
    missing = str(tmp_path / "no-python")
    found = peers.find_python(here, [missing, sys.executable])
    assert found == (sys.executable, here)
    assert peers.find_python((3, 99), [missing, sys.executable]) is None
    assert peers.find_python((3, 99), []) is None


def test_ensure_skips_without_a_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(peers, "find_python", lambda minimum: None)
    bin_dir, note = peers.ensure(peers.PEERS["mitmproxy"], tmp_path)
    assert bin_dir is None
    assert note.startswith("skipped: mitmproxy 12.3.1 needs Python >= 3.12")
    assert list(tmp_path.iterdir()) == []


def test_ensure_reuses_an_installed_venv(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setattr(peers, "find_python", lambda minimum: ("python3.12", (3, 12)))
    venv = tmp_path / "mitmproxy-12.3.1-py3.12"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "mitmdump").touch()
    (venv / ".nectoproxy-bench-installed").write_text("mitmproxy==12.3.1\n")
    bin_dir, note = peers.ensure(peers.PEERS["mitmproxy"], tmp_path)
    assert bin_dir == venv / "bin"
    assert "Python 3.12" in note


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert peers.cache_root() == tmp_path / "nectoproxy-bench" / "peers"


def test_commands(tmp_path: Path) -> None:
    ca = peers.Ca(tmp_path / "k", tmp_path / "c", tmp_path / "s")
    single = peers.proxy_py_command(tmp_path, 8899, tmp_path / "origin.pem", ca,
                                    tmp_path / "certs", single=True)
    assert single[:5] == [str(tmp_path / "proxy"), "--hostname", "127.0.0.1", "--port", "8899"]
    assert "--num-acceptors" in single and "--ca-signing-key-file" in single
    assert single[single.index("--ca-file") + 1] == str(tmp_path / "origin.pem")
    default = peers.proxy_py_command(tmp_path, 8899, tmp_path / "o.pem", None, tmp_path, False)
    assert "--num-acceptors" not in default and "--ca-key-file" not in default
    mitm = peers.mitmdump_command(tmp_path, 8080, tmp_path / "o.pem", tmp_path / "conf")
    assert f"ssl_verify_upstream_trusted_ca={tmp_path / 'o.pem'}" in mitm
    assert "-q" in mitm


def test_side_table() -> None:
    rows: list[dict[str, Any]] = []
    for rps, peer_rps, load in ((100.0, 50.0, 1.0), (300.0, 70.0, 2.0), (200.0, 60.0, 3.0)):
        rows += [
            {"scenario": "plain", "run": "direct", "generator": "wrk", "rps": rps * 10,
             "errors": 0, "loadavg": load},
            {"scenario": "plain", "run": "NectoProxy", "generator": "wrk", "rps": rps,
             "errors": 1, "cpu_s_per_1k": 0.2, "loadavg": load},
            {"scenario": "plain", "run": "proxy.py 2.4.10", "generator": "wrk", "rps": peer_rps,
             "errors": 0, "loadavg": load},
        ]
    table = report.side_table(rows)
    lines = table.splitlines()
    assert len(lines) == 5
    necto = lines[3]
    assert "200 [100-300]" in necto
    assert "| 3 " in necto  # errors summed over the runs
    assert "200 " in necto and "1.0, 2.0, 3.0" in necto
    assert "0.10x" in necto  # vs direct: 200 / 2,000
    assert "3.33x" in necto  # vs proxy.py: 200 / 60
    assert lines[4].split("|")[-2].strip() == "-"  # proxy.py is not compared with itself
