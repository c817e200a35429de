"""nectoproxy-plugin-rules: mock, block, delay, throttle, map and rewrite traffic by rules.

Rules live in ``nectoproxy.toml`` (``[[plugins.rules.rule]]``) or in a rules file that table
points to (``file = "rules.toml"``), which is reloaded when it changes. See README.md.
"""

from __future__ import annotations

from nectoproxy_plugin_rules.plugin import RulesPlugin

__version__ = "0.1.0"
#: The plugin's name when passed from Python; installed, its entry point has the same name.
name = "rules"

__all__ = ["RulesPlugin", "__version__", "name"]
