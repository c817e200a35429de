"""``nectoproxy.testing.command``: the helper the command's tests start ``nectoproxy`` with."""

from __future__ import annotations

from pathlib import Path

import pytest

from nectoproxy.testing.command import LISTENING, Listener, NectoProxyCommand, run_nectoproxy

ARGS = ("--no-config", "--no-entry-points", "-q", "--listen-host", "127.0.0.1",
        "--listen-port", "0")


def test_the_banner_gives_the_addresses_and_the_end_stops_it(tmp_path: Path) -> None:
    with run_nectoproxy(*ARGS, "--web-port", "0", home=tmp_path) as proxy:
        assert proxy.process.poll() is None
        assert [listener.host for listener in proxy.listening] == ["127.0.0.1"]
        assert proxy.port > 0 and proxy.workers == 1
        assert proxy.inspector_url == \
            f"http://127.0.0.1:{proxy.web_port}/?token={proxy.token}"
        assert proxy.web_port > 0 and proxy.token == (tmp_path / "web-token").read_text().strip()
        assert proxy.banner[-1].startswith("CA certificate: ")
    assert proxy.returncode == 0  # SIGTERM: a clean stop
    assert "Traceback" not in proxy.output()


def test_a_command_that_exits_before_its_banner_fails_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"exited \(2\) before its banner") as err, \
            run_nectoproxy(*ARGS, "--no-such-option", home=tmp_path):
        pytest.fail("no banner: the block must not run")
    assert "--no-such-option" in str(err.value)  # argparse's message, from its output


def test_a_failure_in_the_block_shows_the_output_and_stops_the_command(tmp_path: Path) -> None:
    running: list[NectoProxyCommand] = []
    with pytest.raises(ZeroDivisionError) as err, \
            run_nectoproxy(*ARGS, "--no-web", home=tmp_path) as proxy:
        running.append(proxy)
        _ = 1 / 0
    notes = getattr(err.value, "__notes__", [])
    assert len(notes) == 1 and "NectoProxy listening on 127.0.0.1:" in notes[0]
    assert running[0].returncode is not None


@pytest.mark.parametrize(("line", "expected", "workers"), [
    ("NectoProxy listening on 127.0.0.1:8080", Listener("127.0.0.1", 8080), None),
    ("NectoProxy listening on 127.0.0.1:8080 (regular mode) (2 worker processes)",
     Listener("127.0.0.1", 8080, "regular"), "2"),
    ("NectoProxy listening on ::1:9000 (reverse:http://127.0.0.1:5000 mode)",
     Listener("::1", 9000, "reverse:http://127.0.0.1:5000"), None),
])
def test_listening_lines(line: str, expected: Listener, workers: str | None) -> None:
    match = LISTENING.match(line)
    assert match is not None
    assert Listener(match["host"], int(match["port"]), match["mode"] or "") == expected
    assert match["workers"] == workers
