"""nectoproxy.toml: validation, precedence, and the config commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nectoproxy.config import config_from_dict, load_config
from nectoproxy.errors import ConfigError


def nectoproxy(*args: str, cwd: Path, home: Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ["PATH"], "NECTOPROXY_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "nectoproxy", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "nectoproxy.toml"
    path.write_text("[proxy]\nlisten_prot = 1\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key proxy.listen_prot"):
        load_config(str(path), env={})


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = tmp_path / "nectoproxy.toml"
    path.write_text('[proxy]\nlisten_port = "eighty"\n')
    with pytest.raises(ConfigError, match=r"proxy.listen_port: expected an integer, got 'eighty'"):
        load_config(str(path), env={})


def test_invalid_toml_and_unknown_section(tmp_path):
    path = tmp_path / "nectoproxy.toml"
    path.write_text("[proxy\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(path), env={})
    path.write_text("[proxxy]\n")
    with pytest.raises(ConfigError, match="unknown section 'proxxy'"):
        load_config(str(path), env={})


def test_precedence_cli_over_env_over_file(tmp_path):
    path = tmp_path / "nectoproxy.toml"
    path.write_text("[proxy]\nlisten_port = 1000\nread_timeout = 5\nssl_insecure = true\n")
    env = {"NECTOPROXY_PROXY_LISTEN_PORT": "2000", "NECTOPROXY_PROXY_READ_TIMEOUT": "7.5"}
    config = load_config(str(path), env=env, overrides={"proxy": {"listen_port": 3000}})
    assert config.proxy.listen_port == 3000
    assert config.proxy.read_timeout == 7.5
    assert config.proxy.ssl_insecure is True
    assert config.source == str(path)


def test_unknown_environment_setting_is_an_error():
    with pytest.raises(ConfigError, match="NECTOPROXY_PROXY_LISTEN_PROT"):
        load_config(use_file=False, env={"NECTOPROXY_PROXY_LISTEN_PROT": "1"})


def test_file_discovery_cwd_then_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "nectoproxy.toml").write_text("[proxy]\nlisten_port = 4000\n")
    monkeypatch.chdir(tmp_path)
    env = {"NECTOPROXY_HOME": str(home)}
    assert load_config(env=env).proxy.listen_port == 4000
    (tmp_path / "nectoproxy.toml").write_text("[proxy]\nlisten_port = 5000\n")
    assert load_config(env=env).proxy.listen_port == 5000
    assert load_config(env=env, use_file=False).proxy.listen_port == 8888
    assert load_config(env=env).certs_dir == home / "certs"


def test_config_init_show_check_commands(tmp_path):
    home = tmp_path / "home"
    result = nectoproxy("config", "init", cwd=tmp_path, home=home)
    assert result.returncode == 0, result.stderr
    assert "# Port to listen on" in (tmp_path / "nectoproxy.toml").read_text()
    again = nectoproxy("config", "init", cwd=tmp_path, home=home)
    assert again.returncode == 1 and "exists" in again.stderr
    check = nectoproxy("config", "check", cwd=tmp_path, home=home)
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr
    show = nectoproxy("config", "show", "--listen-port", "9999", cwd=tmp_path, home=home,
                      env={"NECTOPROXY_PROXY_READ_TIMEOUT": "3"})
    assert "listen_port = 9999" in show.stdout and "read_timeout = 3.0" in show.stdout
    (tmp_path / "bad.toml").write_text("[log]\nlevel = \"loud\"\n")
    bad = nectoproxy("config", "check", "bad.toml", cwd=tmp_path, home=home)
    assert bad.returncode == 2
    assert "log.level: expected one of" in bad.stderr and "Traceback" not in bad.stderr


def test_startup_error_is_a_message_not_a_traceback(tmp_path):
    script = tmp_path / "oops.py"
    script.write_text("import does_not_exist_anywhere\n")
    result = nectoproxy("--no-config", "--listen-host", "127.0.0.1", "--listen-port", "0",
                        "-s", str(script), cwd=tmp_path, home=tmp_path / "home")
    assert result.returncode == 2
    assert "oops.py (line 1): ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_auto_means_one_per_core(monkeypatch):
    assert config_from_dict({"proxy": {"workers": "auto"}}).proxy.workers == 0
    monkeypatch.setenv("NECTOPROXY_PROXY_WORKERS", "auto")
    assert load_config(use_file=False).proxy.workers == 0
    with pytest.raises(ConfigError, match='proxy.workers: expected an integer or "auto"'):
        config_from_dict({"proxy": {"workers": "many"}})
