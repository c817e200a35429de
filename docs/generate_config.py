"""Render docs/configuration.md from the config dataclasses: `python docs/generate_config.py`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nectoproxy.config import SECTIONS, ListenConfig, toml_default

INTRO = """# Configuration reference

NectoProxy reads `nectoproxy.toml`: the file given with `--config PATH` (or
`$NECTOPROXY_CONFIG`), else `./nectoproxy.toml`, else `~/.nectoproxy/nectoproxy.toml`
(`$NECTOPROXY_HOME` moves `~/.nectoproxy`). No file at all is fine; `--no-config` ignores them.

Precedence: command line > environment > file > defaults. Every key can be set from the
environment as `NECTOPROXY_<SECTION>_<KEY>` (e.g. `NECTOPROXY_PROXY_LISTEN_PORT=9000`; lists
are comma-separated). `NECTOPROXY_DISABLE_PLUGINS=a,b` is a shorthand for `plugins.disable`.

Unknown sections, unknown keys and wrong types are errors that name the file and the key,
for example `nectoproxy.toml: unknown key proxy.listen_prot (known: ...)`.

- `nectoproxy config init [PATH]` writes a commented file with every key at its default.
- `nectoproxy config show` prints the effective configuration (file + environment + flags).
- `nectoproxy config check [PATH]` validates a file, loads the plugins and lets each check its
  own table; it exits non-zero with the key path on error.

This page is generated from `nectoproxy/config.py` by `python docs/generate_config.py`.
"""

OUTRO = """## Plugin tables `[plugins.<name>]`

A table under `[plugins]` named after a loaded plugin is handed to that plugin's
`on_configure(config, options)` hook as `options`; the plugin validates it and stops start-up
with a message naming the key when it is wrong. A table for a plugin that is not loaded (and
not disabled) is an error. The keys of `[plugins]` above are reserved names.

```toml
[plugins]
load = ["scripts/add_header.py", "mycompany.proxy_plugin"]
disable = ["har"]

[plugins.add_header]
request_headers = { "X-Debug" = "1" }
```

Script paths in `load` are relative to the configuration file.
"""


def render() -> str:
    parts = [INTRO]
    tables = [(f"[{name}]", cls) for name, cls in SECTIONS.items()]
    tables.insert(1, ("[[proxy.listen]]", ListenConfig))
    for name, cls in tables:
        rows = [f"## `{name}`", "", "| key | default | meaning |", "|---|---|---|"]
        for field in dataclasses.fields(cls):
            shown = toml_default(field).replace("\n", " ")
            shown = " ".join(shown.split()).replace("|", "\\|")
            rows.append(f"| `{field.name}` | `{shown}` | {field.metadata['help']} |")
        parts.append("\n".join(rows) + "\n")
    parts.append(OUTRO)
    return "\n".join(parts)


if __name__ == "__main__":
    Path(__file__).with_name("configuration.md").write_text(render())
