"""Finding, loading and calling plugins.

Order: built-ins, then installed entry points (group ``nectoproxy``), then the modules and
script files named in the config and on the command line, then objects passed in from Python.
``check_pending`` runs last, so a misspelled hook name fails start-up instead of being ignored.

pluggy does not await coroutines, so :meth:`PluginHost.call` walks the implementations itself
in pluggy's order and awaits every awaitable result, one after the other.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from nectoproxy import hookspecs
from nectoproxy.config import Config
from nectoproxy.errors import ConfigError, PluginError

log = logging.getLogger("nectoproxy.plugins")
ENTRY_POINT_GROUP = "nectoproxy"
_script_ids = itertools.count(1)


class _PluginManager(pluggy.PluginManager):
    """Treats undecorated ``on_*`` callables as hook implementations (scripts need no import)."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("on_"):
            member = getattr(plugin, name, None)
            if inspect.isroutine(member):
                return {}
        return opts


@dataclass
class PluginInfo:
    """What ``nectoproxy plugins`` shows about one loaded plugin."""

    name: str
    source: str  # "built-in", "entry point", "module", "script" or "object"
    location: str  # distribution, module name or file path
    version: str = ""
    plugin: object = None
    mtime: float = 0.0
    #: Hooks the plugin's ``on_configure`` said it does not need this run.
    dropped: set[str] = field(default_factory=set)

    @property
    def hooks(self) -> list[str]:
        return sorted(n for n in dir(self.plugin) if n.startswith("on_") and callable(
            getattr(self.plugin, n, None)) and n not in self.dropped)


@dataclass
class _Impl:
    plugin_name: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]


@dataclass
class PluginHost:
    """Owns the pluggy manager and calls hooks for the engine."""

    config: Config
    infos: dict[str, PluginInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: Plugins whose ``on_configure`` returned False: loaded, but switched off for this run.
        self.inactive: dict[str, PluginInfo] = {}
        self.pm = _PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._impls: dict[str, list[_Impl]] = {}
        #: Record in ``flow.modified_by`` which plugins change a flow: on once a plugin that
        #: reads it is registered (``tracks_changes = True`` on the plugin object: capture).
        #: Plugins that only watch (``changes_flows = False``) are not compared before and
        #: after their hooks.
        self.track_changes = False
        self.observers: set[str] = set()

    # -- loading -----------------------------------------------------------------------------

    def load(self, *, scripts: Sequence[str] = (), objects: Sequence[object] = ()) -> None:
        """Load every plugin the configuration asks for; raise PluginError on any problem."""
        from nectoproxy import builtin_plugins

        disabled = set(self.config.plugins.disable)
        for name, plugin in builtin_plugins.create(self.config):
            if name not in disabled:
                self.register(plugin, PluginInfo(name, "built-in", "nectoproxy"))
        if self.config.plugins.entry_points:
            self._load_entry_points(disabled)
        base = Path(self.config.source).parent if self.config.source else Path.cwd()
        for spec in self.config.plugins.load:
            self.load_spec(spec, base, disabled)
        for spec in scripts:
            self.load_spec(spec, Path.cwd(), disabled)
        for obj in objects:
            name = getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__
            self.register(obj, PluginInfo(str(name), "object", repr(obj)))
        self.check()

    def _load_entry_points(self, disabled: set[str]) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or ep.name in self.infos:
                continue
            dist = ep.dist
            where = f"{dist.name} {dist.version}" if dist else ep.value
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (from {where}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if inspect.isclass(plugin):
                plugin = plugin()
            info = PluginInfo(ep.name, "entry point", dist.name if dist else ep.value,
                              dist.version if dist else "")
            self.register(plugin, info)

    def load_spec(self, spec: str, base: Path, disabled: set[str]) -> None:
        """Load a script path (``x.py``) or a dotted module name."""
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            path = (base / spec).expanduser().resolve()
            if path.stem in disabled:
                return
            module = load_script(path)
            self.register(module, PluginInfo(path.stem, "script", str(path),
                                             mtime=_mtime(path)))
            return
        if spec in disabled:
            return
        try:
            module = importlib.import_module(spec)
        except Exception as exc:
            raise PluginError(f"plugin module {spec!r} failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
        version = getattr(module, "__version__", "")
        self.register(module, PluginInfo(spec.rpartition(".")[2], "module", spec, str(version)))

    def register(self, plugin: object, info: PluginInfo) -> None:
        if info.name in self.infos:
            info.name = f"{info.name}@{info.location}"
        info.plugin = plugin
        for name in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, name) if name.startswith("on_") else None
            if opts and (opts.get("hookwrapper") or opts.get("wrapper")):
                raise PluginError(
                    f"plugin {info.name!r} ({info.location}): {name} is a pluggy hook wrapper; "
                    "NectoProxy calls and awaits every hook itself, so wrappers are not "
                    "supported (use tryfirst/trylast to run before or after the others)")
        try:
            self.pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {info.name!r} ({info.location}): {exc}") from None
        except ValueError as exc:
            raise PluginError(f"plugin {info.name!r} ({info.location}): {exc}") from None
        self.infos[info.name] = info
        if getattr(plugin, "changes_flows", True) is False:
            self.observers.add(info.name)
        if getattr(plugin, "tracks_changes", False) is True:
            self.track_changes = True
        self._impls.clear()

    def unregister(self, name: str) -> None:
        info = self.infos.pop(name)
        self.pm.unregister(info.plugin, name=name)
        self._impls.clear()

    def check(self) -> None:
        """Every ``on_*`` implementation must match a hookspec (catches typos)."""
        for name, hook in self.pm.hook.__dict__.items():
            if name.startswith("_") or hook.spec is not None:
                continue
            impls = hook.get_hookimpls()
            if not impls:  # left behind by an unregistered plugin
                continue
            owners = ", ".join(f"{i.plugin_name!r} ({self.infos[i.plugin_name].location})"
                               for i in impls if i.plugin_name in self.infos)
            known = ", ".join(hook_names())
            raise PluginError(f"unknown hook {name!r} in plugin {owners}; known hooks: {known}")

    # -- calling -----------------------------------------------------------------------------

    def implementations(self, hook: str) -> list[_Impl]:
        impls = self._impls.get(hook)
        if impls is None:
            # pluggy calls the last registered first; tryfirst/trylast are sorted in already.
            impls = [_Impl(i.plugin_name, i.function, tuple(i.argnames))
                     for i in reversed(getattr(self.pm.hook, hook).get_hookimpls())
                     if hook not in self._dropped(i.plugin_name)]
            self._impls[hook] = impls
        return impls

    def _dropped(self, name: str) -> set[str]:
        info = self.infos.get(name)
        return info.dropped if info is not None else set()

    def has(self, hook: str) -> bool:
        return bool(self.implementations(hook))

    async def call(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook`` in order, awaiting async ones.

        A failing implementation is logged with its plugin name and traceback and the others
        still run; with ``plugins.on_error = "respond"`` a failure in a flow hook raises
        PluginError after logging, so the engine answers 500.
        """
        impls = self._impls.get(hook)
        if impls is None:
            impls = self.implementations(hook)
        flow = kwargs.get("flow") if self.track_changes else None
        slow = self.config.plugins.slow_hook_ms / 1000
        observers = self.observers
        # (The body of _call_one, inline: a coroutine per implementation per flow was a third
        # of what dispatching a plain hook cost.)
        for impl in impls:
            args = [kwargs[name] for name in impl.argnames]
            before = None if flow is None or impl.plugin_name in observers \
                else _fingerprint(flow)
            try:
                started = time.perf_counter()
                result = impl.function(*args)
                elapsed = time.perf_counter() - started
                if elapsed >= slow:
                    self._report_if_slow(impl, hook, elapsed, slow)
                if result is not None and inspect.isawaitable(result):
                    await _Timed(result, functools.partial(self._report_if_slow, impl, hook,
                                                           limit=slow))
            except (ConfigError, PluginError):
                raise
            except Exception as exc:  # noqa: BLE001 - logged and contained by _failed
                self._failed(hook, impl, exc)
            if before is not None and _fingerprint(flow) != before and \
                    impl.plugin_name not in flow.modified_by:  # type: ignore[union-attr]
                flow.modified_by.append(impl.plugin_name)  # type: ignore[union-attr]

    async def _call_one(self, hook: str, impl: _Impl, args: list[Any]) -> Any:
        slow = self.config.plugins.slow_hook_ms / 1000
        try:
            started = time.perf_counter()
            result = impl.function(*args)
            self._report_if_slow(impl, hook, time.perf_counter() - started, slow)
            if inspect.isawaitable(result):
                result = await _Timed(result, lambda t: self._report_if_slow(impl, hook, t, slow))
            return result
        except (ConfigError, PluginError):
            raise
        except Exception as exc:  # noqa: BLE001 - logged and contained by _failed
            self._failed(hook, impl, exc)
            return None

    def _failed(self, hook: str, impl: _Impl, exc: Exception) -> None:
        """A hook implementation raised: logged; raised on as the engine needs it."""
        self.report_failure(impl.plugin_name, hook, exc)
        if hook in ("on_configure",):
            raise ConfigError(f"plugin {impl.plugin_name!r}: {exc}") from exc
        if self.config.plugins.on_error == "respond" and hook in _FLOW_HOOKS:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook}: "
                              f"{type(exc).__name__}: {exc}") from exc

    def report_failure(self, plugin: str, hook: str, exc: BaseException) -> None:
        where = self.infos[plugin].location if plugin in self.infos else "?"
        tb = "".join(traceback.format_exception(exc)).rstrip()
        log.error("plugin %r (%s) raised in %s: %s: %s\n%s", plugin, where, hook,
                  type(exc).__name__, exc, tb)

    def _report_if_slow(self, impl: _Impl, hook: str, seconds: float, limit: float) -> None:
        if seconds >= limit:
            log.warning("plugin %r blocked the event loop for %.0f ms in %s; use async I/O "
                        "or anyio.to_thread", impl.plugin_name, seconds * 1000, hook)

    # -- script reloading --------------------------------------------------------------------

    async def configure(self, names: set[str] | None = None) -> None:
        """Call ``on_configure`` with each plugin's own ``[plugins.<name>]`` table."""
        options = self.config.plugin_options
        for impl in self.implementations("on_configure"):
            if names is not None and impl.plugin_name not in names:
                continue
            kwargs = {"config": self.config, "options": options.get(impl.plugin_name, {})}
            result = await self._call_one("on_configure", impl, [kwargs[n] for n in impl.argnames])
            if result is False and impl.plugin_name in self.infos:
                # Nothing to do this run (e.g. no rules configured): unregister it, so that it
                # costs nothing and makes no body buffer.
                log.debug("plugin %r is inactive for this run", impl.plugin_name)
                self.inactive[impl.plugin_name] = self.infos[impl.plugin_name]
                self.unregister(impl.plugin_name)
            elif isinstance(result, (set, frozenset, list, tuple)):
                self._keep_hooks(impl.plugin_name, {str(name) for name in result})

    def _keep_hooks(self, name: str, keep: set[str]) -> None:
        """Re-register a plugin with only the hooks it asked to keep for this run."""
        unknown = keep - set(hook_names())
        if unknown:
            raise ConfigError(f"plugin {name!r}: on_configure kept unknown hooks "
                              f"{sorted(unknown)}")
        # Filtered at dispatch rather than re-registered, so the plugin keeps its place in
        # the call order.
        self.infos[name].dropped = set(self.infos[name].hooks) - keep
        self._impls.clear()

    async def reload_changed_scripts(self) -> list[str]:
        """Reload every script whose file changed; keep the old version if the new one fails."""
        reloaded = []
        for name, info in list(self.infos.items()):
            if info.source != "script":
                continue
            path = Path(info.location)
            mtime = _mtime(path)
            if mtime == info.mtime:
                continue
            info.mtime = mtime
            try:
                module = load_script(path)
            except PluginError as exc:
                log.error("not reloading %s: %s (the previous version stays active)", path, exc)
                continue
            self.unregister(name)
            try:
                self.register(module, PluginInfo(name, "script", str(path), mtime=mtime))
                self.check()
                await self.configure({name})
            except (PluginError, ConfigError) as exc:
                log.error("not reloading %s: %s (the previous version stays active)", path, exc)
                if name in self.infos:
                    self.unregister(name)
                self.register(info.plugin, info)
                continue
            log.info("reloaded script %s", path)
            reloaded.append(name)
        return reloaded


_FLOW_HOOKS = {"on_request_headers", "on_request", "on_response_headers", "on_response"}


def _fingerprint(flow: Any) -> tuple[Any, ...]:
    """What a plugin can change in a flow, compared before and after each hook call: cheap
    (identities and edit counters, no copies), so changes made through the objects' API
    count, as does replacing any of them."""
    request = flow.request
    response = flow.response
    headers = request.headers
    parts: tuple[Any, ...] = (
        request.method, request.scheme, request.host, request.port, request.path,
        id(headers), headers._edits, len(headers._fields), id(request.raw_content),
        len(request.chunk_filters), id(response), flow.killed)
    if response is not None:
        headers = response.headers
        parts += (response.status_code, response.reason, id(headers), headers._edits,
                  len(headers._fields), id(response.raw_content), len(response.chunk_filters))
    return parts


def hook_names() -> list[str]:
    return sorted(n for n, f in vars(hookspecs).items()
                  if n.startswith("on_") and inspect.isfunction(f))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def load_script(path: Path) -> ModuleType:
    """Import a script file under a unique module name; errors name the file and line."""
    if not path.is_file():
        raise PluginError(f"script {path}: no such file")
    module_name = f"nectoproxy_script_{next(_script_ids)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"script {path}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        line = ""
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == str(path):
                line = f" (line {frame.lineno})"
        if isinstance(exc, SyntaxError) and exc.lineno:
            line = f" (line {exc.lineno})"
        raise PluginError(f"script {path}{line}: {type(exc).__name__}: {exc}") from exc
    return module


class _Timed:
    """Awaits a coroutine, timing each step it runs between suspensions.

    A step that runs long is code that blocks the event loop (and every other flow with it).
    """

    def __init__(self, awaitable: Awaitable[Any], report: Callable[[float], None]) -> None:
        self._awaitable = awaitable
        self._report = report

    def __await__(self) -> Generator[Any, Any, Any]:
        iterator = self._awaitable.__await__()
        send: Any = None
        error: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                yielded = iterator.throw(error) if error is not None else iterator.send(send)
            except StopIteration as stop:
                self._report(time.perf_counter() - started)
                return stop.value
            self._report(time.perf_counter() - started)
            try:
                send, error = (yield yielded), None
            except BaseException as exc:  # noqa: BLE001 - cancellation must reach the coroutine
                send, error = None, exc


def describe(host: PluginHost) -> list[dict[str, Any]]:
    """Rows for ``nectoproxy plugins``."""
    return [
        {"name": i.name, "version": i.version, "source": i.source, "location": i.location,
         "hooks": i.hooks}
        for i in host.infos.values()
    ]
