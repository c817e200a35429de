"""The rules file is reloaded when it changes; a broken version leaves the old rules in force."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

WAIT = 6.0  # the file is looked at once a second: a change shows within about that


def rules_text(body: str, extra: str = "") -> str:
    # The catch-all answers everything else under .example.test, so nothing is looked up.
    return (f'[[rule]]\nname = "api"\npath = "/v"\nmock = {{ body = "{body}" }}\n{extra}\n'
            '[[rule]]\nname = "rest"\npriority = -1\nblock = { status = 418 }\n')


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def rewrite(path: Path, text: str) -> None:
    """Write a new version whose size differs too (some file systems keep coarse mtimes)."""
    old = path.read_text() if path.exists() else ""
    if len(text) == len(old):
        text += "\n"
    path.write_text(text)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text("one"))
    return path


def test_changed_file_is_reloaded(rules_proxy, rules_file, caplog):
    caplog.set_level(logging.INFO, logger="nectoproxy.rules")
    with rules_proxy(file=str(rules_file)) as proxy, proxy.client() as client:
        assert client.get("http://api.example.test/v").text == "one"
        rewrite(rules_file, rules_text("two, from the new file"))
        assert wait_for(lambda: client.get("http://api.example.test/v").text
                        == "two, from the new file")
        rewrite(rules_file, rules_text("three") + '\n[[rule]]\nname = "new"\npath = "/new"\n'
                                                  'priority = 3\nblock = true\n')
        assert wait_for(lambda: client.get("http://api.example.test/new").status_code == 403)
        assert client.get("http://api.example.test/v").text == "three"
    assert any("reloaded" in r.getMessage() for r in caplog.records)


def test_broken_file_keeps_the_old_rules(rules_proxy, rules_file, caplog):
    caplog.set_level(logging.INFO, logger="nectoproxy.rules")

    def reload_error() -> str | None:
        errors = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.ERROR and "not reloaded" in r.getMessage()]
        return errors[-1] if errors else None

    with rules_proxy(file=str(rules_file)) as proxy, proxy.client() as client:
        assert client.get("http://api.example.test/v").text == "one"
        rewrite(rules_file, rules_text("broken", extra='stauts = 500\n'))
        # Traffic drives the check; the old rules answer meanwhile.
        assert wait_for(lambda: client.get("http://api.example.test/v").text == "one"
                        and reload_error() is not None)
        message = reload_error()
        assert message is not None
        assert "rules.toml: rule 1 (name 'api'): unknown key 'stauts'" in message
        assert "the previous rules stay in force" in message
        assert client.get("http://api.example.test/v").text == "one"
        rewrite(rules_file, "[[rule]\n")  # not even TOML
        assert wait_for(lambda: client.get("http://api.example.test/v").text == "one"
                        and "invalid TOML" in (reload_error() or ""))
        rules_file.unlink()
        time.sleep(1.2)
        assert client.get("http://api.example.test/v").text == "one"
        rewrite(rules_file, rules_text("fixed"))
        assert wait_for(lambda: client.get("http://api.example.test/v").text == "fixed")


def test_a_reload_must_not_clash_with_the_inline_rules(rules_proxy, rules_file, caplog):
    caplog.set_level(logging.INFO, logger="nectoproxy.rules")
    inline = [{"name": "inline", "path": "/inline", "mock": {"body": "inline"}}]
    with rules_proxy(inline, file=str(rules_file)) as proxy, proxy.client() as client:
        rewrite(rules_file, rules_text("clash").replace('name = "api"', 'name = "inline"'))
        assert wait_for(lambda: client.get("http://api.example.test/v").text == "one"
                        and any("already used" in r.getMessage() for r in caplog.records))
        assert client.get("http://api.example.test/inline").text == "inline"


def test_reload_can_be_turned_off(rules_proxy, rules_file):
    with rules_proxy(file=str(rules_file), reload=False) as proxy, proxy.client() as client:
        assert client.get("http://api.example.test/v").text == "one"
        rewrite(rules_file, rules_text("two"))
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert client.get("http://api.example.test/v").text == "one"
            time.sleep(0.25)
