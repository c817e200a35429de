"""The ``[plugins.throttle]`` table, checked into :class:`Settings`.

Every error is a :class:`nectoproxy.ConfigError` naming the key path, e.g.
``[plugins.throttle] profiles.flaky.loss: expected a number from 0 to 1, got 2``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from nectoproxy import ConfigError
from nectoproxy_plugin_throttle.profiles import (
    LOSS_MODES,
    NO_THROTTLE_NAMES,
    PRESET_LIST,
    PRESETS,
    LossMode,
    Profile,
    normalize,
)

TABLE = "[plugins.throttle]"
TOP_KEYS = ("profile", "hosts", "profiles", "seed", "loss_mode")
PROFILE_KEYS = ("download_bps", "upload_bps", "latency_ms", "jitter_ms", "loss", "loss_mode")


@dataclass(frozen=True)
class HostRule:
    """``pattern`` (a glob on the request's host name) -> ``profile`` (None: unthrottled)."""

    pattern: str
    profile: Profile | None

    def matches(self, host: str) -> bool:
        return fnmatch.fnmatchcase(host.lower(), self.pattern)


@dataclass(frozen=True)
class Settings:
    default: Profile | None = None
    rules: tuple[HostRule, ...] = ()
    seed: int | None = None
    loss_mode: LossMode = "reset"

    @property
    def active(self) -> bool:
        """False when nothing would ever be throttled (no default and no host rules)."""
        return self.default is not None or any(r.profile is not None for r in self.rules)

    def profile_for(self, host: str) -> Profile | None:
        """The first host rule that matches wins; else the default profile."""
        for rule in self.rules:
            if rule.matches(host):
                return rule.profile
        return self.default

    def summary(self) -> list[str]:
        """The lines logged at start-up."""
        default = self.default.describe() if self.default else "none (unthrottled)"
        count = len(self.rules)
        rules = f"{count} host rule{'' if count == 1 else 's'}"
        lines = [f"throttle: default profile {default}; {rules}"]
        for rule in self.rules:
            shown = rule.profile.describe() if rule.profile else "none (unthrottled)"
            lines.append(f"throttle: hosts {rule.pattern} -> {shown}")
        return lines


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{TABLE} {key}: {message}")


def _number(value: Any, key: str, *, upper: float | None = None) -> float:
    """A non-negative int or float (not a bool), at most ``upper`` if given."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"expected a number, got {value!r}")
    if value < 0 or (upper is not None and value > upper):
        bound = f"from 0 to {upper:g}" if upper is not None else "of 0 or more"
        raise _fail(key, f"expected a number {bound}, got {value!r}")
    return float(value)


def _rate(value: Any, key: str) -> int:
    """Bytes per second: a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(key, f"expected an integer of 0 or more (bytes per second), got {value!r}")
    return value


def _loss_mode(value: Any, key: str) -> LossMode:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if text not in LOSS_MODES:
        raise _fail(key, f"expected \"reset\" or \"503\", got {value!r}")
    return cast(LossMode, text)


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, f"expected a table, got {value!r}")
    return value


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in table if k not in known]
    if unknown:
        raise _fail(f"{where}{unknown[0]}", f"unknown key (known: {', '.join(known)})")


def parse_profile(name: str, table: Mapping[str, Any], where: str) -> Profile:
    """A custom profile from its ``[plugins.throttle.profiles.<name>]`` table."""
    _check_keys(table, PROFILE_KEYS, where)
    mode = table.get("loss_mode")
    return Profile(
        name=name,
        download_bps=_rate(table.get("download_bps", 0), where + "download_bps"),
        upload_bps=_rate(table.get("upload_bps", 0), where + "upload_bps"),
        latency_ms=_number(table.get("latency_ms", 0), where + "latency_ms"),
        jitter_ms=_number(table.get("jitter_ms", 0), where + "jitter_ms"),
        loss=_number(table.get("loss", 0), where + "loss", upper=1),
        loss_mode=None if mode is None else _loss_mode(mode, where + "loss_mode"),
    )


def _known_names(custom: Mapping[str, Profile]) -> str:
    names = [p.name for p in PRESET_LIST] + [p.name for p in custom.values()]
    return ", ".join([*names, "none"])


def _lookup(value: Any, key: str, custom: Mapping[str, Profile],
            loss_mode: LossMode) -> Profile | None:
    if not isinstance(value, str):
        raise _fail(key, f"expected a profile name, got {value!r}")
    wanted = normalize(value)
    if wanted in NO_THROTTLE_NAMES:
        return None
    profile = custom.get(wanted) or PRESETS.get(wanted)
    if profile is None:
        raise _fail(key, f"unknown profile {value!r} (known: {_known_names(custom)})")
    return profile.with_loss_mode(loss_mode)


def _quoted(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'


def parse_options(options: Mapping[str, Any]) -> Settings:
    """Check the whole table; raise ConfigError naming the first bad key."""
    _check_keys(options, TOP_KEYS, "")
    loss_mode = _loss_mode(options.get("loss_mode", "reset"), "loss_mode")
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _fail("seed", f"expected an integer, got {seed!r}")
    custom: dict[str, Profile] = {}
    for name, table in _table(options.get("profiles", {}), "profiles").items():
        where = f"profiles.{_quoted(name)}"
        key = normalize(name)
        if not key:
            raise _fail(where, "a profile needs a name")
        if key in PRESETS or key in NO_THROTTLE_NAMES or key in custom:
            taken = PRESETS[key].name if key in PRESETS else key
            raise _fail(where, f"the name is already taken by {taken!r}")
        custom[key] = parse_profile(name, _table(table, where), where + ".")
    default = None
    if "profile" in options:
        default = _lookup(options["profile"], "profile", custom, loss_mode)
    rules = []
    for pattern, value in _table(options.get("hosts", {}), "hosts").items():
        where = f"hosts.{_quoted(pattern)}"
        if not pattern.strip():
            raise _fail(where, "empty host pattern")
        rules.append(HostRule(pattern.strip().lower(), _lookup(value, where, custom, loss_mode)))
    return Settings(default, tuple(rules), seed, loss_mode)
