"""NectoProxy plugin: record flows to HAR 1.2 files, and answer requests from them.

Configured by the ``[plugins.har]`` table of nectoproxy.toml (see README.md)::

    [plugins.har]
    path = "flows-{timestamp}.har"

The entry point ``har`` names :class:`HarPlugin`; the proxy creates one per run.
"""

from __future__ import annotations

from nectoproxy_plugin_har.plugin import HarPlugin
from nectoproxy_plugin_har.replay import ReplayIndex
from nectoproxy_plugin_har.settings import HarSettings
from nectoproxy_plugin_har.writer import HarWriter

__version__ = "0.1.0"

__all__ = ["HarPlugin", "HarSettings", "HarWriter", "ReplayIndex", "__version__"]
