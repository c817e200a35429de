"""nectoproxy.toml -> typed, frozen dataclasses.

Precedence is command line > environment > file > defaults. Unknown keys and wrong types are
errors that name the file and the key path (hypercorn's setattr loader accepts typos silently;
we do not). Every key has a help text, which ``nectoproxy config init`` writes as a comment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from nectoproxy.errors import ConfigError

CONFIG_FILE_NAME = "nectoproxy.toml"
ENV_PREFIX = "NECTOPROXY_"


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$NECTOPROXY_HOME`` or ``~/.nectoproxy``: where the CA and the user config live."""
    env = os.environ if env is None else env
    return Path(env.get("NECTOPROXY_HOME") or "~/.nectoproxy").expanduser()


def _opt(default: Any, help: str) -> Any:
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


PRIVATE_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
)


MODES = ("regular", "reverse", "socks5")
UPSTREAM_SCHEMES = ("http", "socks4", "socks4a", "socks5", "socks5h")
#: The port a ``--mode`` without one listens on.
MODE_PORTS = {"regular": 8888, "reverse": 8080, "socks5": 1080}


@dataclass(frozen=True)
class ListenConfig:
    """One ``[[proxy.listen]]`` table: a way into the proxy, on its own address."""

    mode: Literal["regular", "reverse", "socks5"] = _opt(
        "regular", "\"regular\" (an HTTP proxy), \"reverse\" (requests go to origin) or "
        "\"socks5\" (a SOCKS5 proxy; proxy_auth, when set, is its username/password).")
    host: str = _opt("", "Address to listen on (empty: proxy.listen_host).")
    port: int = _opt(8888, "Port to listen on (when not given, the mode's own: regular 8888, "
                     "reverse 8080, socks5 1080; 0 picks a free one).")
    origin: str = _opt("", "Reverse mode: where requests go, \"http[s]://host[:port]\".")
    keep_host: bool = _opt(
        False, "Reverse mode: send the client's Host header (default: the origin's name).")

    @classmethod
    def parse(cls, spec: str) -> ListenConfig:
        """``MODE[:ORIGIN][@[HOST:]PORT]``, as ``--mode`` takes it: ``regular@8888``,
        ``reverse:https://api.example.com@8080``, ``socks5@127.0.0.1:1080``."""
        text, at, where = spec.partition("@")
        mode, _, origin = text.partition(":")
        if mode not in MODES:
            raise ConfigError(f"mode {spec!r}: unknown mode {mode!r} (known: {', '.join(MODES)})")
        host, port = "", MODE_PORTS[mode]
        if at:
            host_text, colon, port_text = where.rpartition(":")
            if colon:
                host = host_text.strip("[]")
            try:
                port = int(port_text)
            except ValueError:
                raise ConfigError(f"mode {spec!r}: expected @PORT or @HOST:PORT, got "
                                  f"{where!r}") from None
        values: dict[str, Any] = {"mode": mode, "host": host, "port": port, "origin": origin}
        return cls(**values)

    def origin_parts(self) -> tuple[str, str, int]:
        """Reverse mode's (scheme, host, port) (the origin is validated with the file)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.origin)
        assert parts.hostname
        return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https"
                                                             else 80)

    def __str__(self) -> str:
        origin = f":{self.origin}" if self.origin else ""
        return f"{self.mode}{origin}"


@dataclass(frozen=True)
class ProxyConfig:
    listen_host: str = _opt("0.0.0.0", "Address to listen on (0.0.0.0 = all IPv4 interfaces).")
    listen_port: int = _opt(8888, "Port to listen on (0 picks a free one).")
    allow_clients: tuple[str, ...] = _opt(
        PRIVATE_NETWORKS,
        "Client networks allowed to use the proxy; add \"0.0.0.0/0\" and \"::/0\" to open it to "
        "every address (think twice: that is an open proxy).",
    )
    ssl_insecure: bool = _opt(False, "Do not verify upstream TLS certificates (unsafe).")
    upstream_ca: str = _opt("", "Extra CA bundle (PEM file) trusted for upstream TLS.")
    passthrough: tuple[str, ...] = _opt(
        (), "Hosts whose TLS is relayed untouched, not intercepted (\"*.example.com\" allowed)."
    )
    connection_strategy: Literal["eager", "lazy"] = _opt(
        "eager",
        "\"eager\": on an intercepted CONNECT, connect to the origin while the client's "
        "certificate is made and its handshake runs (the first request is faster); \"lazy\": "
        "only when a request needs the origin (nothing contacts a host that plugins answer for).",
    )
    connect_timeout: float = _opt(10.0, "Seconds to connect to an upstream (TCP).")
    tls_handshake_timeout: float = _opt(10.0, "Seconds for a TLS handshake, either side.")
    read_timeout: float = _opt(60.0, "Seconds to wait for upstream data before answering 504.")
    header_timeout: float = _opt(30.0, "Seconds a client has to send a complete request head.")
    idle_timeout: float = _opt(60.0, "Seconds an idle keep-alive client connection is kept.")
    max_header_size: int = _opt(65536, "Largest request line + headers accepted, in bytes.")
    max_header_count: int = _opt(100, "Most header fields accepted in one request.")
    intercept_timeout: float = _opt(
        300.0, "Seconds a flow paused by flow.intercept() (a breakpoint) waits to be resumed "
        "before it continues on its own, logged; 0 = wait for ever.")
    max_body_size: int = _opt(
        0, "Largest request body accepted (413) and response body relayed (502); 0 = no limit."
    )
    proxy_auth: str = _opt(
        "", "Require Basic proxy authentication with these \"user:password\" credentials."
    )
    upstream_proxy: str = _opt(
        "", "Chain through this proxy: \"http://[user:pass@]host:port\", or socks4://, "
        "socks4a://, socks5:// (names resolved here) or socks5h:// (names resolved by the "
        "proxy) with the same [user:pass@]host:port (empty = direct)."
    )
    no_upstream: tuple[str, ...] = _opt(
        (), "Hosts reached directly even when upstream_proxy is set (\"*.internal\" allowed)."
    )
    body_buffer_limit: int = _opt(
        10 * 1024 * 1024,
        "Bodies up to this size are buffered so plugins can read and change them; larger ones "
        "stream through untouched.",
    )
    http2: bool = _opt(
        True, "Offer HTTP/2 (ALPN \"h2\") to clients inside intercepted TLS and to origins; "
        "each side speaks what it negotiates (see docs/http2.md). false = HTTP/1.1 only.")
    http2_max_concurrent_streams: int = _opt(
        100, "Most HTTP/2 streams a client may have open at once on one connection (more are "
        "refused with RST_STREAM REFUSED_STREAM).")
    http2_max_header_list_size: int = _opt(
        65536, "Largest HTTP/2 header list accepted from clients and origins (decompressed, "
        "RFC 9113 field sizes): a bigger one ends the connection (HPACK bombs).")
    http2_max_resets: int = _opt(
        200, "Most streams an HTTP/2 client may reset in 10 seconds before its connection "
        "ends with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).")
    http2_max_control_frames: int = _opt(
        1000, "Most SETTINGS, PING and empty DATA frames an HTTP/2 client may send in 10 "
        "seconds before its connection ends with GOAWAY ENHANCE_YOUR_CALM (floods).")
    max_connections: int = _opt(
        1024, "Most client connections served at once (per worker); more are refused with a "
        "503 (a storm of them closed at once). Each may hold its socket, an origin connection "
        "and a pooled one: the open-file limit is raised to fit, with a warning if it cannot.")
    workers: int = _opt(
        1, "Processes sharing the listening ports (SO_REUSEPORT, Linux); 0 or \"auto\" = one per "
        "CPU core."
    )
    onboarding_host: str = _opt(
        "necto.setup", "Host name whose plain-HTTP pages serve the CA certificate and setup steps."
    )
    listen: tuple[ListenConfig, ...] = _opt(
        (), "Ways into the proxy, each on its own address: [[proxy.listen]] tables (mode, host, "
        "port, origin, keep_host) or \"MODE[:ORIGIN][@[HOST:]PORT]\" strings; empty = one "
        "regular proxy on listen_host:listen_port. See docs/modes.md."
    )
    hosts: dict[str, str] = field(default_factory=dict, metadata={"help": (
        "DNS mapping: connect to this address instead of the host's own, while names, SNI, "
        "Host and certificate checks stay the client's: { \"api.example.com\" = "
        "\"127.0.0.1:3000\", \"*.test\" = \"127.0.0.1\" } (no port: the request's).")})

    @property
    def modes(self) -> tuple[ListenConfig, ...]:
        """Every listener: ``listen``, or one regular proxy on ``listen_host:listen_port``."""
        if self.listen:
            return tuple(dataclasses.replace(m, host=m.host or self.listen_host)
                         for m in self.listen)
        return (ListenConfig("regular", self.listen_host, self.listen_port),)


@dataclass(frozen=True)
class CertsConfig:
    dir: str = _opt("", "Certificate directory (default: $NECTOPROXY_HOME/certs).")


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = _opt("info", "Log level.")
    quiet: bool = _opt(False, "Do not print one line per completed flow.")


@dataclass(frozen=True)
class PluginsConfig:
    load: tuple[str, ...] = _opt((), "Plugin modules (dotted names) or script files to load.")
    disable: tuple[str, ...] = _opt((), "Names of plugins not to load.")
    entry_points: bool = _opt(True, "Load installed third-party plugins (entry points).")
    on_error: Literal["continue", "respond"] = _opt(
        "continue",
        "When a plugin raises: \"continue\" as if it had not run, or \"respond\" with a 500.",
    )
    slow_hook_ms: float = _opt(100.0, "Report a hook that blocks the event loop this long.")
    reload: bool = _opt(True, "Reload script files when they change.")


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = _opt(True, "Capture every flow and serve the inspector (web UI and API).")
    host: str = _opt(
        "127.0.0.1", "Address the inspector listens on; any other than loopback needs a token "
        "set here (anyone who can reach it sees all traffic).")
    port: int = _opt(8889, "Port of the inspector (0 picks a free one).")
    token: str = _opt(
        "", "Token the API and UI require (empty: one is made on first run and kept in "
        "$NECTOPROXY_HOME/web-token).")
    allowed_hosts: tuple[str, ...] = _opt(
        (), "Host names (besides this machine's addresses and localhost) the inspector answers "
        "to; requests naming any other Host are refused (DNS rebinding).")
    store: str = _opt("", "Flow store file (default: $NECTOPROXY_HOME/flows.db).")
    session: str = _opt(
        "", "Continue this capture session (id or name) instead of starting a new one per run.")
    max_body_size: int = _opt(
        10 * 1024 * 1024, "Bytes of each body stored; the rest is not stored (the client still "
        "gets every byte) and the body is marked truncated.")
    max_age_days: float = _opt(30.0, "Flows older than this are deleted (0 = keep).")
    max_flows: int = _opt(1_000_000, "Most flows kept across all sessions, oldest deleted first "
                          "(0 = no limit).")
    max_bytes: int = _opt(2 * 1024**3, "Largest the flow store may grow, in bytes, oldest "
                          "flows deleted first (0 = no limit).")

    @property
    def is_loopback(self) -> bool:
        import ipaddress

        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    certs: CertsConfig = field(default_factory=CertsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    #: The ``[plugins.<name>]`` tables, handed to each plugin's ``on_configure``.
    plugin_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The file this configuration was read from, if any.
    source: str | None = None
    home: str = ""

    @property
    def certs_dir(self) -> Path:
        if self.certs.dir:
            return Path(self.certs.dir).expanduser()
        return self.home_dir / "certs"

    @property
    def home_dir(self) -> Path:
        """$NECTOPROXY_HOME (default ~/.nectoproxy): certificates, the flow store, the token."""
        return Path(self.home).expanduser() if self.home else home_dir()

    @property
    def store_path(self) -> Path:
        if self.web.store:
            return Path(self.web.store).expanduser()
        return self.home_dir / "flows.db"

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed, validated like the file: ``replace(proxy={...})``."""
        data = config_to_dict(self)
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return config_from_dict(data, source=self.source, home=self.home)


SECTIONS: dict[str, type[Any]] = {
    "proxy": ProxyConfig,
    "certs": CertsConfig,
    "log": LogConfig,
    "plugins": PluginsConfig,
    "web": WebConfig,
}


def _type_name(tp: Any) -> str:
    if typing.get_args(tp) == (ListenConfig, ...):
        return "a list of [[proxy.listen]] tables or \"MODE@PORT\" strings"
    if typing.get_origin(tp) is dict:
        return "a table of strings"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of strings"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[tp]


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    ok: bool
    if origin is Literal:
        ok = value in typing.get_args(tp)
    elif origin is tuple and typing.get_args(tp)[0] is ListenConfig:
        ok = isinstance(value, (list, tuple))
        value = tuple(_listen_entry(v, f"{where}[{i}]") for i, v in enumerate(value)) \
            if ok else value
    elif origin is dict:
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        value = dict(value) if ok else value
    elif origin is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _listen_entry(value: Any, where: str) -> ListenConfig:
    """One element of ``proxy.listen``: a table, a "MODE@PORT" string, or one made already."""
    if isinstance(value, ListenConfig):
        return value
    if isinstance(value, str):
        return ListenConfig.parse(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table or a \"MODE@PORT\" string, got {value!r}")
    types_ = _section_types(ListenConfig)
    values: dict[str, Any] = {}
    for key, item in value.items():
        if key not in types_:
            raise ConfigError(f"{where}: unknown key {key} (known: {', '.join(types_)})")
        values[key] = _check(item, types_[key], f"{where}.{key}")
    values.setdefault("port", MODE_PORTS[values.get("mode", "regular")])
    return ListenConfig(**values)


def _from_env_text(text: str, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if origin is dict:  # "name=address,name=address"
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(f"{where}: expected name=address pairs, got {text!r}")
        return {name.strip(): address.strip() for name, _, address in pairs}
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if tp in (int, float):
        if where.endswith("NECTOPROXY_PROXY_WORKERS") and text.strip() == "auto":
            return 0
        try:
            return tp(text)
        except ValueError:
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {text!r}") from None
    return text


def _section_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def config_from_dict(
    data: Mapping[str, Any], *, source: str | None = None, home: str = ""
) -> Config:
    """Validate a parsed TOML document (or the same shape built in Python) into a Config."""
    where = source or "configuration"
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown section {min(unknown)!r} "
            f"(known: {', '.join(SECTIONS)})"
        )
    sections: dict[str, Any] = {}
    plugin_options: dict[str, Mapping[str, Any]] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{name}] must be a table")
        types_ = _section_types(cls)
        values: dict[str, Any] = {}
        for key, value in table.items():
            if name == "plugins" and isinstance(value, Mapping):
                plugin_options[key] = dict(value)
                continue
            if key not in types_:
                raise ConfigError(
                    f"{where}: unknown key {name}.{key} (known: {', '.join(types_)})"
                )
            if (name, key) == ("proxy", "workers") and isinstance(value, str):
                if value != "auto":
                    raise ConfigError(f"{where}: proxy.workers: expected an integer or "
                                      f"\"auto\", got {value!r}")
                value = 0  # one per CPU core
            values[key] = _check(value, types_[key], f"{where}: {name}.{key}")
        sections[name] = cls(**values)
    config = Config(**sections, plugin_options=plugin_options, source=source, home=home)
    _validate_values(config, where)
    return config


def _validate_values(config: Config, where: str) -> None:
    import ipaddress

    p = config.proxy
    if not 0 <= p.listen_port < 65536:
        raise ConfigError(f"{where}: proxy.listen_port: {p.listen_port} is not a port number")
    for net in p.allow_clients:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: proxy.allow_clients: {net!r} is not a network") from None
    for key in ("connect_timeout", "tls_handshake_timeout", "read_timeout", "header_timeout",
                "idle_timeout"):
        if getattr(p, key) <= 0:
            raise ConfigError(f"{where}: proxy.{key} must be greater than 0")
    if p.intercept_timeout < 0:
        raise ConfigError(f"{where}: proxy.intercept_timeout must not be negative")
    if p.upstream_proxy:
        from urllib.parse import urlsplit

        parts = urlsplit(p.upstream_proxy)
        if parts.scheme not in UPSTREAM_SCHEMES or not parts.hostname:
            raise ConfigError(f"{where}: proxy.upstream_proxy: expected "
                              f"\"http://[user:pass@]host:port\" (or socks4://, socks4a://, "
                              f"socks5://, socks5h://), got {p.upstream_proxy!r}")
    _validate_modes(p, where)
    if p.proxy_auth and ":" not in p.proxy_auth:
        raise ConfigError(f"{where}: proxy.proxy_auth: expected \"user:password\"")
    if p.workers < 0:
        raise ConfigError(f"{where}: proxy.workers must be \"auto\" or 0 (one per core), or more")
    if p.max_body_size < 0:
        raise ConfigError(f"{where}: proxy.max_body_size must not be negative")
    for key in ("max_header_size", "max_header_count", "max_connections",
                "http2_max_concurrent_streams", "http2_max_header_list_size",
                "http2_max_resets", "http2_max_control_frames"):
        if getattr(p, key) < 1:
            raise ConfigError(f"{where}: proxy.{key} must be at least 1")
    if p.body_buffer_limit < 0:
        raise ConfigError(f"{where}: proxy.body_buffer_limit must not be negative")
    w = config.web
    if not 0 <= w.port < 65536:
        raise ConfigError(f"{where}: web.port: {w.port} is not a port number")
    for key in ("max_body_size", "max_age_days", "max_flows", "max_bytes"):
        if getattr(w, key) < 0:
            raise ConfigError(f"{where}: web.{key} must not be negative")
    if w.enabled and not w.is_loopback and not w.token:
        raise ConfigError(f"{where}: web.host {w.host!r} is not a loopback address: set "
                          "web.token (or NECTOPROXY_WEB_TOKEN) first, since anyone who can "
                          "reach the inspector sees all traffic")


def _validate_modes(p: ProxyConfig, where: str) -> None:
    from urllib.parse import urlsplit

    for i, mode in enumerate(p.listen):
        at = f"{where}: proxy.listen[{i}] ({mode})"
        if not 0 <= mode.port < 65536:
            raise ConfigError(f"{at}: {mode.port} is not a port number")
        if mode.mode == "reverse":
            parts = urlsplit(mode.origin)
            try:
                parts.port  # noqa: B018 (raises on a bad port)
            except ValueError:
                raise ConfigError(f"{at}: bad port in origin {mode.origin!r}") from None
            if parts.scheme not in ("http", "https") or not parts.hostname \
                    or parts.path not in ("", "/") or parts.query or parts.username:
                raise ConfigError(f"{at}: origin must be \"http[s]://host[:port]\", "
                                  f"got {mode.origin!r}")
        elif mode.origin or mode.keep_host:
            raise ConfigError(f"{at}: origin and keep_host are for reverse mode only")
    for name, address in p.hosts.items():
        if not name or not _is_address(address):
            raise ConfigError(f"{where}: proxy.hosts: {name!r} = {address!r}: expected "
                              "\"address\" or \"address:port\"")


def _is_address(text: str) -> bool:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    port: str | None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if rest else "")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return bool(host.strip()) and port is not None and (
        port == "" or (port.isdigit() and 0 < int(port) < 65536))


def config_to_dict(config: Config) -> dict[str, Any]:
    """The TOML document for a Config (what ``config show`` prints)."""
    data: dict[str, Any] = {}
    for name in SECTIONS:
        section = dataclasses.asdict(getattr(config, name))
        data[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
    data["proxy"]["listen"] = [{k: v for k, v in m.items() if v != ""}  # (tomli_w: no empties)
                               for m in data["proxy"]["listen"]]
    for name, options in config.plugin_options.items():
        data["plugins"][name] = dict(options)
    return data


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$NECTOPROXY_CONFIG``, else ./nectoproxy.toml, else the home one."""
    if explicit:
        return Path(explicit).expanduser()
    if env.get("NECTOPROXY_CONFIG"):
        return Path(env["NECTOPROXY_CONFIG"]).expanduser()
    for candidate in (Path.cwd() / CONFIG_FILE_NAME, home_dir(env) / CONFIG_FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


_ENV_SPECIAL = {"NECTOPROXY_HOME", "NECTOPROXY_CONFIG", "NECTOPROXY_DISABLE_PLUGINS"}


def env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``NECTOPROXY_<SECTION>_<KEY>`` variables, typed like the keys they set."""
    out: dict[str, dict[str, Any]] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var in _ENV_SPECIAL:
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        types_ = _section_types(SECTIONS[section]) if section in SECTIONS else {}
        if key not in types_:
            raise ConfigError(f"environment: {var} is not a NectoProxy setting")
        out.setdefault(section, {})[key] = _from_env_text(text, types_[key], f"environment: {var}")
    if env.get("NECTOPROXY_DISABLE_PLUGINS"):
        names = _from_env_text(env["NECTOPROXY_DISABLE_PLUGINS"], tuple[str, ...], "")
        out.setdefault("plugins", {})["disable"] = names
    return out


def load_config(
    path: str | None = None,
    *,
    use_file: bool = True,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """The effective configuration: defaults < file < environment < ``overrides`` (CLI)."""
    env = dict(os.environ) if env is None else dict(env)
    file = find_config_file(path, env) if use_file else None
    data: dict[str, Any] = read_toml(file) if file else {}
    for layer in (env_overrides(env), overrides or {}):
        for section, values in layer.items():
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{file}: [{section}] must be a table")
            table.update(values)
    return config_from_dict(data, source=str(file) if file else None, home=str(home_dir(env)))


def toml_default(f: dataclasses.Field[Any]) -> str:
    """A key's default as TOML (``{}`` for a table, which tomli_w would write as a header)."""
    if f.default_factory is not dataclasses.MISSING:
        return "{}"
    value = list(f.default) if isinstance(f.default, tuple) else f.default
    return tomli_w.dumps({"x": value}).strip()[4:]


def default_config_text() -> str:
    """A commented nectoproxy.toml with every key at its default (``config init``)."""
    lines = ["# NectoProxy configuration. Every key is optional; these are the defaults.", ""]
    for name, cls in SECTIONS.items():
        lines.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {toml_default(f)}")
        lines.append("")
    lines += [
        "# Options for one plugin go in a table named after it, e.g.:",
        "# [plugins.rules]",
        "# file = \"rules.toml\"",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "CertsConfig",
    "Config",
    "ListenConfig",
    "LogConfig",
    "PluginsConfig",
    "ProxyConfig",
    "WebConfig",
    "config_from_dict",
    "config_to_dict",
    "default_config_text",
    "load_config",
]
