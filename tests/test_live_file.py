"""``nectoproxy.settings.LiveFile``, the "TOML file, watched, reloaded when it changes" under
the pass-through hosts, the breakpoints and the rules plugin: a bad version keeps the last good
settings (and says why), a change is picked up, a write is atomic and owner-only."""

from __future__ import annotations

import logging
import os
import stat
import threading
import tomllib
from collections.abc import Awaitable
from pathlib import Path

import pytest

from nectoproxy import ConfigError
from nectoproxy.settings import LiveFile, SettingsError, checked_object

log = logging.getLogger("nectoproxy.test-live-file")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def read_colours(path: Path) -> list[str]:
    """The reader a provider gives: checked settings, or an error naming the file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    colours = document.get("colours", [])
    if not isinstance(colours, list) or not all(isinstance(c, str) for c in colours):
        raise ConfigError(f"{path}: colours: expected a list of names")
    return colours


class Colours:
    """A plugin's side: what is in force, and every value ``apply`` was given."""

    def __init__(self, path: Path) -> None:
        self.in_force: list[str] = []
        self.applied: list[list[str]] = []
        # interval 0: every question looks at the file (the tests need no clock)
        self.live = LiveFile(path, read_colours, self.apply, what="colours", logger=log,
                             header="# kept by a test\n", interval=0)

    def apply(self, colours: list[str]) -> None:
        self.in_force = colours
        self.applied.append(colours)


def edit(path: Path, text: str) -> None:
    """Change the file as an editor saves it (a new file renamed over the old one)."""
    new = path.with_name(path.name + ".edit")
    new.write_text(text, encoding="utf-8")
    os.replace(new, path)


def test_a_missing_file_loads_as_its_reader_says(tmp_path: Path) -> None:
    colours = Colours(tmp_path / "colours.toml")
    assert colours.live.load() is True
    assert colours.applied == [[]] and colours.live.error is None


def test_a_bad_file_keeps_the_last_good_settings(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "colours.toml"
    edit(path, 'colours = ["red"]\n')
    colours = Colours(path)
    colours.live.load()
    caplog.set_level(logging.INFO, logger=log.name)
    for broken, why in (('colours = ["red"\n', "colours.toml: "),  # not TOML (ValueError)
                        ("colours = 3\n", "colours: expected a list of names")):  # ConfigError
        edit(path, broken)
        colours.live.reload()
        assert colours.in_force == ["red"] and colours.applied == [["red"]]
        assert colours.live.error is not None and why in colours.live.error
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors, "the bad file was not reported"
        message = errors[-1].getMessage()
        assert message.startswith(f"colours: not reloaded: {path}: ")
        assert why in message and message.endswith("(the previous colours stay in force)")
    edit(path, 'colours = ["green"]\n')
    colours.live.reload()
    assert colours.in_force == ["green"] and colours.live.error is None
    assert f"colours: reloaded {path}" in [r.getMessage() for r in caplog.records]


async def test_a_change_is_picked_up_by_refresh(tmp_path: Path) -> None:
    path = tmp_path / "colours.toml"
    colours = Colours(path)
    colours.live.load()
    await colours.live.refresh()
    assert colours.applied == [[]]  # unchanged: not read again
    edit(path, 'colours = ["red", "blue"]\n')
    await colours.live.refresh()
    assert colours.in_force == ["red", "blue"]
    await colours.live.refresh()
    assert colours.applied == [[], ["red", "blue"]]  # read once per change
    path.unlink()
    await colours.live.refresh()
    assert colours.in_force == []  # (this reader says a missing file has no colours)


async def test_then_acts_at_once_or_after_reloading_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "colours.toml"
    colours = Colours(path)
    colours.live.load()
    seen: list[list[str]] = []
    assert colours.live.then(lambda: seen.append(colours.in_force)) is None
    assert seen == [[]]  # done at once, no coroutine
    edit(path, 'colours = ["red"]\n')
    pending = colours.live.then(lambda: seen.append(colours.in_force))
    assert isinstance(pending, Awaitable) and seen == [[]]  # not before the reload
    await pending
    assert seen == [[], ["red"]]
    edit(path, "colours = 3\n")
    pending = colours.live.then(lambda: seen.append(colours.in_force))
    assert pending is not None
    await pending
    assert seen == [[], ["red"], ["red"]]  # a bad file: the action runs on the last good


def test_a_write_is_atomic_owner_only_and_seen_by_the_others(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "colours.toml"
    here, there = Colours(path), Colours(path)  # two worker processes' plugins
    here.live.load()
    there.live.load()
    here.live.write({"colours": ["red"]}, ["red"])
    assert here.in_force == ["red"]  # applied here at once
    assert path.read_text() == '# kept by a test\ncolours = [\n    "red",\n]\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["colours.toml"]  # no temporary left
    assert here.live.then(lambda: None) is None  # its own write is not a change to reload
    assert there.live.watch.due(), "the other process does not see the write"
    there.live.reload()
    assert there.in_force == ["red"]


def test_a_reader_never_sees_half_a_write(tmp_path: Path) -> None:
    path = tmp_path / "colours.toml"
    colours = Colours(path)
    versions = [[c * 100_000] for c in "abcd"]
    colours.live.write({"colours": versions[0]}, versions[0])
    seen: list[list[str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(read_colours(path))
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(10):
            for version in versions:
                colours.live.write({"colours": version}, version)
    finally:
        stop.set()
        reader.join(30)
    assert not failures and seen
    assert all(version in versions for version in seen)


def test_a_document_toml_cannot_hold_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "colours.toml"
    colours = Colours(path)
    colours.live.write({"colours": ["red"]}, ["red"])
    before = path.read_text()
    with pytest.raises(SettingsError, match=r"^colours\[0\]: cannot be written as TOML") as err:
        colours.live.write({"colours": [None]}, ["?"], field="colours[0]")
    assert err.value.field == "colours[0]"
    assert path.read_text() == before and colours.in_force == ["red"]


SCHEMA = {"type": "object", "required": ["colours"], "properties": {
    "colours": {"type": "array"}, "file": {"type": "string", "readOnly": True}}}


@pytest.mark.parametrize(("value", "message", "field"), [
    (["red"], 'expected an object {"colours": [...]}', ""),
    ({"colour": []}, "colour: unknown key (known: colours)", "colour"),
    ({"file": "x"}, "colours: required", "colours"),
])
def test_a_put_value_is_checked_against_its_schema(value: object, message: str,
                                                   field: str) -> None:
    with pytest.raises(SettingsError) as err:
        checked_object(value, SCHEMA)
    assert (err.value.message, err.value.field) == (message, field)


def test_read_only_keys_are_let_through() -> None:
    value = {"colours": ["red"], "file": "/x"}  # as get gave it
    assert checked_object(value, SCHEMA) is value
