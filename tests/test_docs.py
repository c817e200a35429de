"""The docs describe the code that exists: every hook and every config key is documented."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from nectoproxy import hookspecs
from nectoproxy.config import SECTIONS, config_from_dict, default_config_text
from nectoproxy.plugins import PluginHost, hook_names
from nectoproxy.testing import proxy_config

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_hookspec_has_a_documented_section(tmp_path):
    text = (DOCS / "hooks.md").read_text()
    host = PluginHost(proxy_config(tmp_path))
    for name in hook_names():
        spec = getattr(host.pm.hook, name).spec
        assert spec is not None, name
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and ":param" in doc or name == "on_stop", name
        section = text.split(f"## `{name}`", 1)
        assert len(section) == 2, f"docs/hooks.md has no section for {name}"
        assert doc.split("\n")[0] in section[1], f"docs/hooks.md section {name} is stale"
        for param in spec.argnames:
            assert f"{param}:" in section[1].split("## ")[0], (name, param)


def test_hooks_md_is_generated_from_hookspecs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_hooks", DOCS / "generate_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.ORDER) == hook_names()
    assert (DOCS / "hooks.md").read_text() == module.render(), "run docs/generate_hooks.py"


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_generated_from_config():
    rendered = _load("generate_config").render()
    assert (DOCS / "configuration.md").read_text() == rendered, "run docs/generate_config.py"


def test_every_config_key_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for name, cls in SECTIONS.items():
        assert f"## `[{name}]`" in text
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in text, f"{name}.{field.name} is not documented"


def test_config_init_text_is_valid_and_complete():
    import tomllib

    data = tomllib.loads(default_config_text())
    config = config_from_dict(data)
    assert config.proxy.listen_port == 8888 and config.proxy.listen_host == "0.0.0.0"
    for name, cls in SECTIONS.items():
        assert set(data[name]) == {f.name for f in dataclasses.fields(cls)}
