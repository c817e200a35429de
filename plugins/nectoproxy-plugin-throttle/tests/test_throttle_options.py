"""Presets, names, option checking and the pacer's arithmetic (no sockets)."""

from __future__ import annotations

import anyio
import pytest
from nectoproxy_plugin_throttle import (
    PRESET_LIST,
    PRESETS,
    Pacer,
    Throttle,
    normalize,
    parse_options,
)

import nectoproxy
from nectoproxy.config import config_from_dict

K = 1024
CONFIG = config_from_dict({})

# The numbers from ../shared/REFERENCE.md: download/upload in KiB/s, latency ± jitter, loss %.
REFERENCE = {
    "Slow 2G": (35, 32, 1400, 400, 1),
    "Regular 2G": (56, 19, 800, 200, 0.5),
    "Good 2G": (112, 35, 650, 150, 0.2),
    "Slow 3G": (97, 41, 400, 100, 0),
    "Regular 3G": (192, 94, 300, 100, 0),
    "Good 3G": (512, 192, 170, 40, 0),
    "Regular 4G": (1152, 512, 50, 10, 0),
    "DSL": (256, 128, 50, 10, 0),
    "WiFi": (3840, 1920, 10, 5, 0),
}


def test_presets_have_the_reference_numbers():
    assert [p.name for p in PRESET_LIST] == [*REFERENCE, "Offline"]
    for name, (down, up, latency, jitter, loss) in REFERENCE.items():
        profile = PRESETS[normalize(name)]
        assert (profile.download_bps, profile.upload_bps) == (down * K, up * K), name
        assert (profile.latency_ms, profile.jitter_ms) == (latency, jitter), name
        assert profile.loss == pytest.approx(loss / 100), name
        assert not profile.offline
    offline = PRESETS["offline"]
    assert offline.offline and offline.fails_always


@pytest.mark.parametrize("spelling", ["slow-3g", "Slow 3G", "SLOW_3G", "slow3g", " slow - 3g "])
def test_preset_names_are_forgiving(spelling):
    assert parse_options({"profile": spelling}).default.name == "Slow 3G"


def test_describe_and_summary():
    settings = parse_options({
        "profile": "slow 3g",
        "hosts": {"*.example.test": "offline", "api.local.test": "custom1", "LOCALHOST": "none"},
        "profiles": {"custom1": {"download_bps": 1500, "latency_ms": 250.5, "loss": 0.25}},
    })
    assert settings.summary() == [
        "throttle: default profile Slow 3G (97 KiB/s down, 41 KiB/s up, 400±100 ms, 0% loss);"
        + " 3 host rules",
        "throttle: hosts *.example.test -> Offline (offline: every request fails, "
        + "connection reset)",
        "throttle: hosts api.local.test -> custom1 (1500 B/s down, unlimited up, 250.5±0 ms,"
        + " 25% loss (connection reset))",
        "throttle: hosts localhost -> none (unthrottled)",
    ]
    assert PRESETS["regular2g"].with_loss_mode("503").describe() == (
        "Regular 2G (56 KiB/s down, 19 KiB/s up, 800±200 ms, 0.5% loss (answered 503))")


def test_host_rules_first_match_wins_then_default():
    settings = parse_options({
        "profile": "wifi",
        "hosts": {"api.example.test": "dsl", "*.example.test": "slow-2g", "quiet.test": "off"},
    })
    assert settings.profile_for("api.example.test").name == "DSL"
    assert settings.profile_for("WWW.Example.Test").name == "Slow 2G"
    assert settings.profile_for("example.test").name == "WiFi"  # *. needs a subdomain
    assert settings.profile_for("quiet.test") is None
    reordered = parse_options({"hosts": {"*.example.test": "slow-2g", "api.example.test": "dsl"}})
    assert reordered.profile_for("api.example.test").name == "Slow 2G"
    assert reordered.profile_for("elsewhere.test") is None


def test_loss_mode_defaults_and_overrides():
    settings = parse_options({
        "loss_mode": "503",
        "profile": "slow 2g",
        "hosts": {"a.test": "mine", "b.test": "theirs"},
        "profiles": {"mine": {"loss": 1, "loss_mode": "reset"}, "theirs": {"loss": 0.5}},
    })
    assert settings.default.loss_mode == "503"
    assert settings.profile_for("a.test").loss_mode == "reset"
    assert settings.profile_for("b.test").loss_mode == "503"
    assert parse_options({"profile": "offline"}).default.loss_mode == "reset"
    assert parse_options({"profile": "x", "profiles": {"x": {"loss_mode": 503}}}) \
        .default.loss_mode == "503"


@pytest.mark.parametrize(("options", "message"), [
    ({"profil": "wifi"}, "profil: unknown key"),
    ({"profile": "slow-5g"}, "profile: unknown profile 'slow-5g' (known: Slow 2G"),
    ({"profile": 3}, "profile: expected a profile name"),
    ({"loss_mode": "drop"}, "loss_mode: expected \"reset\" or \"503\""),
    ({"seed": "x"}, "seed: expected an integer"),
    ({"seed": True}, "seed: expected an integer"),
    ({"hosts": ["a"]}, "hosts: expected a table"),
    ({"hosts": {"a.test": "nope"}}, "hosts.\"a.test\": unknown profile 'nope'"),
    ({"hosts": {"plain": "nope"}}, "hosts.plain: unknown profile 'nope'"),
    ({"hosts": {"*.a.test": "nope"}}, "hosts.\"*.a.test\": unknown profile"),
    ({"hosts": {" ": "wifi"}}, "empty host pattern"),
    ({"profiles": {"x": 1}}, "profiles.x: expected a table"),
    ({"profiles": {"x": {"download": 1}}}, "profiles.x.download: unknown key"),
    ({"profiles": {"x": {"download_bps": 1.5}}}, "profiles.x.download_bps: expected an integer"),
    ({"profiles": {"x": {"upload_bps": -1}}}, "profiles.x.upload_bps: expected an integer of 0"),
    ({"profiles": {"x": {"latency_ms": "1"}}}, "profiles.x.latency_ms: expected a number"),
    ({"profiles": {"x": {"jitter_ms": -5}}}, "profiles.x.jitter_ms: expected a number of 0"),
    ({"profiles": {"x": {"loss": 2}}}, "profiles.x.loss: expected a number from 0 to 1, got 2"),
    ({"profiles": {"x": {"loss": True}}}, "profiles.x.loss: expected a number"),
    ({"profiles": {"x": {"loss_mode": "rst"}}}, "profiles.x.loss_mode: expected"),
    ({"profiles": {"Slow-3G": {}}}, "profiles.Slow-3G: the name is already taken by 'Slow 3G'"),
    ({"profiles": {"none": {}}}, "profiles.none: the name is already taken"),
    ({"profiles": {"a b": {}, "a-b": {}}}, "profiles.a-b: the name is already taken"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(nectoproxy.ConfigError) as info:
        parse_options(options)
    assert str(info.value).startswith("[plugins.throttle] ")
    assert message in str(info.value)


@pytest.mark.parametrize("options", [
    {},
    {"profile": "none"},
    {"hosts": {"a.test": "off"}},
    {"profiles": {"unused": {"latency_ms": 10}}, "seed": 1, "loss_mode": "503"},
])
def test_nothing_configured_switches_the_plugin_off(options):
    assert Throttle().on_configure(CONFIG, options) is False


def test_something_configured_keeps_it_on():
    assert Throttle().on_configure(CONFIG, {"profile": "wifi"}) is None
    assert Throttle().on_configure(CONFIG, {"hosts": {"a.test": "dsl"}}) is None


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + 0.003  # sleeps overshoot a little; the rate must not drift


def test_pacer_slices_and_rate():
    fake = FakeTime()
    pacer = Pacer(10_000, clock=fake.clock, sleep=fake.sleep)
    assert pacer.slice_size == 1000
    assert list(pacer.slices(2500)) == [1000, 1000, 500]
    assert list(pacer.slices(0)) == []

    async def run() -> list[bytes]:
        return [await pacer(b"x" * 2500), await pacer(b"y" * 7500)]

    out = anyio.run(run)
    assert out == [b"x" * 2500, b"y" * 7500]  # unchanged
    assert pacer.bytes_paced == 10_000
    # 11 slices (1000, 1000, 500 | 1000 x 7, 500): the first goes at once, each next one when
    # the previous is done on the virtual link, so the last one starts at 0.95 s; the 3 ms
    # overshoot of each sleep is absorbed by the next, so the rate does not drift.
    assert len(fake.sleeps) == 10
    assert fake.now - 100.0 == pytest.approx(0.95 + 0.003)
    assert max(fake.sleeps) <= 0.1 + 1e-9


def test_pacer_gives_no_credit_for_idle_time():
    fake = FakeTime()
    pacer = Pacer(1000, clock=fake.clock, sleep=fake.sleep)

    async def run() -> None:
        await pacer(b"a" * 100)
        fake.now += 60  # the origin was silent for a minute
        await pacer(b"b" * 300)

    anyio.run(run)
    assert fake.sleeps == pytest.approx([0.1, 0.1], abs=0.004)  # still paced after it


def test_pacer_rejects_a_zero_rate():
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)
