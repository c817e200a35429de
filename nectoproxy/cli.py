"""The ``nectoproxy`` command: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import anyio
import tomli_w

from nectoproxy.config import Config, config_to_dict, default_config_text, load_config
from nectoproxy.errors import NectoProxyError, PortInUse
from nectoproxy.logs import setup_logging
from nectoproxy.workers import serve

log = logging.getLogger("nectoproxy.cli")


def _config_options(parser: argparse.ArgumentParser) -> None:
    """Options that shape the configuration; shared by the proxy and the sub-commands."""
    s = argparse.SUPPRESS
    parser.add_argument("--config", metavar="PATH", default=s,
                        help="configuration file (default: ./nectoproxy.toml, then "
                             "~/.nectoproxy/nectoproxy.toml)")
    parser.add_argument("--no-config", action="store_true", default=s,
                        help="ignore every configuration file")
    parser.add_argument("--listen-host", metavar="HOST", default=s)
    parser.add_argument("--listen-port", metavar="PORT", type=int, default=s)
    parser.add_argument("--mode", metavar="MODE[:ORIGIN][@[HOST:]PORT]", action="append",
                        default=s, help="listen this way (repeatable; replaces "
                        "[[proxy.listen]]): regular@8888, reverse:https://api.example.com@8080, "
                        "socks5@1080")
    parser.add_argument("--ssl-insecure", action="store_true", default=s,
                        help="do not verify upstream TLS certificates (unsafe)")
    parser.add_argument("--upstream-ca", metavar="PEM", default=s,
                        help="extra CA bundle trusted for upstream TLS")
    parser.add_argument("--certs-dir", metavar="DIR", default=s,
                        help="certificate directory (default: ~/.nectoproxy/certs)")
    parser.add_argument("-s", "--script", metavar="PATH", action="append", default=s,
                        help="load a plugin script (repeatable)")
    parser.add_argument("--disable", metavar="PLUGIN", action="append", default=s,
                        help="do not load this plugin (repeatable)")
    parser.add_argument("--no-entry-points", action="store_true", default=s,
                        help="load no installed third-party plugins")
    parser.add_argument("--web-host", metavar="HOST", default=s,
                        help="address of the inspector (web UI and API; default 127.0.0.1)")
    parser.add_argument("--web-port", metavar="PORT", type=int, default=s,
                        help="port of the inspector (default 8889; 0 picks a free one)")
    parser.add_argument("--no-web", action="store_true", default=s,
                        help="neither capture flows nor serve the inspector")
    parser.add_argument("--session", metavar="SESSION", default=s,
                        help="continue this capture session (id or name) instead of starting "
                             "a new one")
    parser.add_argument("-q", "--quiet", action="store_true", default=s,
                        help="no line per flow")
    parser.add_argument("-v", "--verbose", action="store_true", default=s,
                        help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    from nectoproxy import __version__
    from nectoproxy.certcli import add_cert_parser

    parser = argparse.ArgumentParser(
        prog="nectoproxy",
        description="A plugin-driven, scriptable HTTP(S) proxy. Without a command, starts the "
                    "proxy (default 0.0.0.0:8888).",
    )
    parser.add_argument("--version", action="version", version=f"nectoproxy {__version__}")
    _config_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="start the proxy (the default)")
    _config_options(run)
    add_cert_parser(commands)
    _config_options(commands.choices["cert"])
    from nectoproxy.sessionscli import add_sessions_parser
    add_sessions_parser(commands, _config_options)
    config = commands.add_parser("config", help="write, show or check nectoproxy.toml")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION",
                                            required=True)
    init = config_commands.add_parser("init", help="write a commented default nectoproxy.toml")
    init.add_argument("path", nargs="?", default="nectoproxy.toml")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    show = config_commands.add_parser("show", help="print the effective configuration")
    _config_options(show)
    check = config_commands.add_parser("check", help="validate a configuration file")
    check.add_argument("path", nargs="?")
    _config_options(check)
    plugins = commands.add_parser("plugins", help="list the loaded plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    _config_options(plugins)
    return parser


def config_from_args(args: argparse.Namespace, path: str | None = None) -> Config:
    overrides: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, attr: str) -> None:
        if hasattr(args, attr):
            overrides.setdefault(section, {})[key] = getattr(args, attr)

    put("proxy", "listen_host", "listen_host")
    put("proxy", "listen_port", "listen_port")
    put("proxy", "listen", "mode")
    put("proxy", "ssl_insecure", "ssl_insecure")
    put("proxy", "upstream_ca", "upstream_ca")
    put("certs", "dir", "certs_dir")
    put("log", "quiet", "quiet")
    put("web", "host", "web_host")
    put("web", "port", "web_port")
    put("web", "session", "session")
    if getattr(args, "no_web", False):
        overrides.setdefault("web", {})["enabled"] = False
    if getattr(args, "verbose", False):
        overrides.setdefault("log", {})["level"] = "debug"
    if getattr(args, "no_entry_points", False):
        overrides.setdefault("plugins", {})["entry_points"] = False
    config = load_config(path or getattr(args, "config", None),
                         use_file=not getattr(args, "no_config", False), overrides=overrides)
    if hasattr(args, "disable"):
        config = config.replace(plugins={"disable": [*config.plugins.disable, *args.disable]})
    return config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except NectoProxyError as exc:
        return _fail(exc)
    except BaseExceptionGroup as group:  # start-up errors raised inside a task group
        errors = group.subgroup(lambda e: isinstance(e, NectoProxyError))
        if errors is None:
            raise
        while isinstance(errors, BaseExceptionGroup):
            errors = errors.exceptions[0]
        return _fail(errors)
    except KeyboardInterrupt:
        return 130


def _fail(exc: BaseException) -> int:
    """One line on stderr; exit 1 for a port in use (try again later or elsewhere), else 2."""
    print(f"nectoproxy: error: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, PortInUse) else 2


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "cert":
        from nectoproxy.certcli import run_cert

        return run_cert(args, config_from_args(args).certs_dir)
    if command == "sessions":
        from nectoproxy.sessionscli import run_sessions
        return run_sessions(args, config_from_args(args))
    if command == "config":
        return _config_command(args)
    if command == "plugins":
        return _plugins_command(args)
    config = config_from_args(args)
    setup_logging(config)
    return run_proxy(config, scripts=getattr(args, "script", []))


def _config_command(args: argparse.Namespace) -> int:
    if args.config_command == "init":
        path = Path(args.path)
        if path.exists() and not args.force:
            print(f"nectoproxy: error: {path} exists (use --force to overwrite)",
                  file=sys.stderr)
            return 1
        path.write_text(default_config_text())
        print(f"Wrote {path}")
        return 0
    if args.config_command == "show":
        print(tomli_w.dumps(config_to_dict(config_from_args(args))), end="")
        return 0
    config = config_from_args(args, path=args.path)
    from nectoproxy.proxy.server import Proxy

    proxy = Proxy(config, scripts=getattr(args, "script", []))
    anyio.run(proxy.check)
    print(f"OK: {config.source or 'defaults (no configuration file found)'}")
    return 0


def _plugins_command(args: argparse.Namespace) -> int:
    from nectoproxy.plugins import PluginHost, describe

    host = PluginHost(config_from_args(args))
    host.load(scripts=getattr(args, "script", []))
    rows = describe(host)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        version = f" {row['version']}" if row["version"] else ""
        print(f"{row['name']}{version}  [{row['source']}: {row['location']}]")
        print(f"    hooks: {', '.join(row['hooks']) or '-'}")
    return 0


def run_proxy(config: Config, scripts: list[str] | None = None) -> int:
    """Run the proxy (and its worker processes) until SIGINT/SIGTERM; a second signal exits
    at once."""
    return serve(config, scripts or [])
