"""nectoproxy-plugin-throttle: network conditioning for NectoProxy.

Slows traffic down the way a bad network would: latency ± jitter per request, download and
upload bandwidth applied as the bodies stream, and packet loss as a failed request (the
connection drops, or a 503). Profiles are the original NectoProxy's presets (Slow 2G ... WiFi,
Offline) or custom ones, chosen per host with glob patterns, with one global default::

    [plugins.throttle]
    profile = "slow-3g"
    hosts = { "*.cdn.test" = "regular-2g", "localhost" = "none" }

See README.md for every option.
"""

from __future__ import annotations

from nectoproxy_plugin_throttle.options import HostRule, Settings, parse_options
from nectoproxy_plugin_throttle.pacing import Pacer
from nectoproxy_plugin_throttle.plugin import METADATA_KEY, SIMULATED_HEADER, Throttle
from nectoproxy_plugin_throttle.profiles import PRESET_LIST, PRESETS, Profile, normalize

__version__ = "0.1.0"
#: The plugin's name: its entry point, and its ``[plugins.throttle]`` table.
name = "throttle"

__all__ = [
    "METADATA_KEY",
    "PRESETS",
    "PRESET_LIST",
    "SIMULATED_HEADER",
    "HostRule",
    "Pacer",
    "Profile",
    "Settings",
    "Throttle",
    "__version__",
    "name",
    "normalize",
    "parse_options",
]
