"""Network profiles: the original NectoProxy's presets, and how names are looked up.

Rates are in bytes per second (K = 1024); 0 means "not limited". Latency and jitter are in
milliseconds: each request waits ``latency_ms`` plus a uniform draw from
``[-jitter_ms, +jitter_ms]`` (never less than 0). ``loss`` is the probability (0..1) that a
request fails, with ``loss_mode`` deciding how: ``"reset"`` drops the connection without an
answer, ``"503"`` answers 503 Service Unavailable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

LossMode = Literal["reset", "503"]
LOSS_MODES: tuple[LossMode, ...] = ("reset", "503")
K = 1024

#: Host rules may map a host to this name to leave it unthrottled (also "off").
NO_THROTTLE_NAMES = frozenset({"none", "off"})


@dataclass(frozen=True)
class Profile:
    """One set of network conditions."""

    name: str
    download_bps: int = 0
    upload_bps: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    #: None: use the plugin-wide ``loss_mode`` (the presets leave it open).
    loss_mode: LossMode | None = None
    #: Every request fails at once (the Offline preset).
    offline: bool = False

    def with_loss_mode(self, mode: LossMode) -> Profile:
        return self if self.loss_mode is not None else replace(self, loss_mode=mode)

    @property
    def fails_always(self) -> bool:
        return self.offline or self.loss >= 1.0

    def describe(self) -> str:
        """``Slow 3G (97 KiB/s down, 41 KiB/s up, 400±100 ms, 0% loss)``."""
        mode = self.loss_mode or "reset"
        if self.offline:
            return f"{self.name} (offline: every request fails, {_mode_text(mode)})"
        latency = f"{_number(self.latency_ms)}±{_number(self.jitter_ms)} ms"
        loss = f"{_number(round(self.loss * 100, 4))}% loss"
        if self.loss > 0:
            loss += f" ({_mode_text(mode)})"
        return (f"{self.name} ({format_rate(self.download_bps)} down, "
                f"{format_rate(self.upload_bps)} up, {latency}, {loss})")


def _mode_text(mode: LossMode) -> str:
    return "answered 503" if mode == "503" else "connection reset"


def _number(value: float) -> str:
    return f"{value:g}"


def format_rate(bps: int) -> str:
    """``97 KiB/s`` for multiples of 1024, ``1500 B/s`` otherwise, ``unlimited`` for 0."""
    if bps <= 0:
        return "unlimited"
    if bps % K == 0:
        return f"{bps // K} KiB/s"
    return f"{bps} B/s"


def _preset(name: str, down_k: int, up_k: int, latency: int, jitter: int,
            loss_percent: float) -> Profile:
    return Profile(name, down_k * K, up_k * K, latency, jitter, loss_percent / 100)


#: The original NectoProxy's network presets (../shared/REFERENCE.md), by display name.
PRESET_LIST: tuple[Profile, ...] = (
    _preset("Slow 2G", 35, 32, 1400, 400, 1),
    _preset("Regular 2G", 56, 19, 800, 200, 0.5),
    _preset("Good 2G", 112, 35, 650, 150, 0.2),
    _preset("Slow 3G", 97, 41, 400, 100, 0),
    _preset("Regular 3G", 192, 94, 300, 100, 0),
    _preset("Good 3G", 512, 192, 170, 40, 0),
    _preset("Regular 4G", 1152, 512, 50, 10, 0),
    _preset("DSL", 256, 128, 50, 10, 0),
    _preset("WiFi", 3840, 1920, 10, 5, 0),
    Profile("Offline", loss=1.0, offline=True),
)

_SEPARATORS = re.compile(r"[\s_-]+")


def normalize(name: str) -> str:
    """The lookup key of a profile name: ``"Slow 3G"``, ``"slow-3g"``, ``"SLOW_3G"`` -> slow3g."""
    return _SEPARATORS.sub("", name).lower()


PRESETS: dict[str, Profile] = {normalize(p.name): p for p in PRESET_LIST}
