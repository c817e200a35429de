"""Live settings: what a plugin lets the inspector read and change while the proxy runs.

A plugin offers settings by implementing the ``on_settings`` hook, which returns
:class:`SettingsProvider` objects. Each has a ``name`` (its place in the API:
``/api/settings/{name}``), a JSON schema of its value, ``get()`` and ``put(value)``.

With ``workers = N`` every process has its own plugin instances and only the first serves the
inspector, so ``put`` cannot reach the other processes' objects. The rule is: ``put``
validates (raising :class:`SettingsError` naming the field), **writes a file** atomically with
:func:`write_atomically`, and applies the value to its own instance; every instance (in every
process) watches that file with a :class:`FileWatch` and reloads it when it changes. The
file also makes the change survive a restart. :class:`LiveFile` is all of that for a TOML file
(read and check, watch, reload off the event loop, keep the last good settings when a version is
bad, write atomically): a plugin gives it a function that reads the file and one that puts the
settings in force.

:class:`SettingsRegistry` is the inspector's side: it collects the providers through the hook
(:meth:`SettingsRegistry.collect`) and remembers what changed, for the event socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, runtime_checkable

import anyio
import anyio.to_thread
import tomli_w

from nectoproxy.errors import NectoProxyError

if TYPE_CHECKING:
    from nectoproxy.config import Config

#: How often (at most) a :class:`FileWatch` looks at its file: a change made in one worker
#: process reaches the others within this long (once traffic arrives).
WATCH_INTERVAL = 0.25


class SettingsError(ValueError):
    """A value ``put`` refuses. ``field`` is where (``rules[2].mock``, ``hosts[0]``, ...);
    the message names it too, so it can be shown alone."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@runtime_checkable
class SettingsProvider(Protocol):
    """One group of live settings (the rules, the network profile, the pass-through hosts).

    ``get`` and ``put`` are called in a worker thread, never on the event loop, so they may
    read and write files; ``put`` calls come one at a time (a ``get`` may run meanwhile).
    """

    @property
    def name(self) -> str:
        """The URL segment: lower-case letters, digits and dashes (``rules``, ``throttle``)."""

    @property
    def title(self) -> str:
        """A few words for a UI ("Rules", "Network profile")."""

    @property
    def description(self) -> str:
        """What the settings do and where they are kept (a sentence or two)."""

    @property
    def schema(self) -> Mapping[str, Any]:
        """A JSON schema (draft 2020-12) of the value; ``readOnly`` properties are ignored by
        ``put``, so a client may send back what ``get`` gave it."""

    def get(self) -> Any:
        """The value now (JSON-compatible: dicts, lists, strings, numbers, booleans)."""

    def put(self, value: Any) -> Any:
        """Validate ``value``, persist it, apply it; return the new value (as ``get`` would).

        Raise :class:`SettingsError` naming the field for a value that is refused; nothing
        changes then.
        """


def checked_object(value: Any, schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """What ``put`` was given, checked against the top of its ``schema``: an object, with no key
    the schema lacks (the ``readOnly`` ones, which ``get`` gives, are let through for ``put`` to
    ignore) and every ``required`` key; SettingsError naming the key else."""
    properties: Mapping[str, Any] = schema["properties"]
    required: Sequence[str] = schema.get("required", ())
    if not isinstance(value, Mapping):
        shown = ", ".join(f'"{key}": [...]' if properties[key].get("type") == "array"
                          else f'"{key}": ...' for key in required)
        raise SettingsError(f"expected an object {{{shown}}}")
    unknown = set(value) - set(properties)
    if unknown:
        key = min(unknown)
        known = ", ".join(k for k, v in properties.items() if not v.get("readOnly"))
        raise SettingsError(f"{key}: unknown key (known: {known})", key)
    for key in required:
        if key not in value:
            raise SettingsError(f"{key}: required", key)
    return value


# -- files ------------------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers (the other worker processes) see the
    old file or the new one, never half of one. The file is owner-only (it may hold mock
    bodies with credentials in them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


#: What identifies one version of a file: (mtime in ns, size, inode); None when missing.
Stamp = tuple[int, int, int] | None


def file_stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class FileWatch:
    """Notices that a file changed, looking at it at most every ``interval`` seconds.

    :meth:`due` is cheap enough for every request (a clock read; a ``stat`` once per
    interval). A file replaced by :func:`write_atomically` is a new file (another inode than
    the one it replaces, a new mtime), so a change that keeps the size is seen too.
    """

    def __init__(self, path: Path, interval: float = WATCH_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.stamp: Stamp = file_stamp(path)
        self._next = 0.0

    def due(self) -> bool:
        """Whether the file changed since the last call that returned True (or :meth:`seen`)."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        current = file_stamp(self.path)
        if current == self.stamp:
            return False
        self.stamp = current
        return True

    def seen(self) -> None:
        """The file as it is now is already applied (this process just wrote it)."""
        self.stamp = file_stamp(self.path)


T = TypeVar("T")
P = ParamSpec("P")


class LiveFile(Generic[T]):
    """A TOML settings file that every process keeps in force: read and checked, watched,
    reloaded when it changes, written atomically.

    ``read(path)`` returns the file's settings, checked (a missing file has settings too, or is
    an error: ``read`` decides), or raises ``ValueError`` or a :class:`~nectoproxy.ConfigError`
    that names the file and what is wrong with it. ``apply(settings)`` puts them in force; it
    is called with every good version: the one :meth:`load` read, each one a reload read, and
    each one :meth:`write` saved. A bad version is logged at ERROR (``{what}: not reloaded:
    <the error> (the previous {what} stay in force)``) and applies nothing, so the last good
    settings stay; :attr:`error` says why until a good version comes.

    On the event loop, a hook asks :meth:`refresh` (``async``) or :meth:`then` (a plain hook
    that returns an awaitable only when it must): each costs a clock read, and a ``stat`` at
    most every ``interval`` seconds; the file is read in a worker thread, only when it changed.
    """

    def __init__(self, path: Path, read: Callable[[Path], T], apply: Callable[[T], None], *,
                 what: str, logger: logging.Logger, header: str = "",
                 interval: float = WATCH_INTERVAL) -> None:
        self.path = path
        self.read = read
        self.apply = apply
        self.what = what
        self.log = logger
        #: Comments written at the top of the file (a TOML document loses them when saved).
        self.header = header
        #: Why the file as it is now is not in force (None: it is).
        self.error: str | None = None
        self.watch = FileWatch(path, interval)  # (before reading: a change meanwhile is seen)

    def load(self) -> bool:
        """Read the file and apply it; a bad file is logged and applies nothing (False). It
        reads a file: on a running proxy, call it in a worker thread."""
        try:
            settings = self.read(self.path)
        except (ValueError, NectoProxyError) as exc:
            self.error = str(exc)
            self.log.error("%s: not reloaded: %s (the previous %s stay in force)",
                           self.what, exc, self.what)
            return False
        self.error = None
        self.apply(settings)
        return True

    def reload(self) -> None:
        """:meth:`load` the file once more, because it changed (in a worker thread)."""
        if self.load():
            self.log.info("%s: reloaded %s", self.what, self.path)

    async def refresh(self) -> None:
        """Reload the file if it changed since it was last read or written."""
        if self.watch.due():
            await anyio.to_thread.run_sync(self.reload)

    def then(self, action: Callable[P, None], *args: P.args, **kwargs: P.kwargs
             ) -> Awaitable[None] | None:
        """``action(*args, **kwargs)`` with the file's latest settings in force: at once
        (None), or, when the file changed, a coroutine that reloads it first, for a hook to
        return (the proxy awaits what a hook returns). Most calls cost a clock read and no
        coroutine."""
        if self.watch.due():
            return self._reload_then(action, *args, **kwargs)
        action(*args, **kwargs)
        return None

    async def _reload_then(self, action: Callable[P, None], *args: P.args, **kwargs: P.kwargs
                           ) -> None:
        await anyio.to_thread.run_sync(self.reload)
        action(*args, **kwargs)

    def write(self, document: Mapping[str, Any], settings: T, *, field: str = "") -> None:
        """Save ``document`` (the TOML of ``settings``, already checked) atomically and
        owner-only (:func:`write_atomically`) and apply ``settings`` here at once; the other
        processes reload the file. SettingsError (at ``field``) if TOML cannot hold it. It
        writes a file: call it in a worker thread (a provider's ``put`` is)."""
        try:
            text = self.header + tomli_w.dumps(document)
        except (TypeError, ValueError) as exc:
            where = f"{field}: " if field else ""
            raise SettingsError(f"{where}cannot be written as TOML: {exc}", field) from None
        write_atomically(self.path, text)
        self.watch.seen()
        self.error = None
        self.apply(settings)


def private_paths(config: Config) -> tuple[Path, ...]:
    """What the inspector must never make reachable, whatever a setting says: the CA's folder
    (its private key), the API's token file and the flow store. A provider whose settings can
    name local files (a rule serving a folder, say) refuses these and any folder holding one.
    """
    store = config.store_path
    token = config.home_dir / "web-token"  # (nectoproxy.inspector.TOKEN_FILE)
    return (config.certs_dir, token, store,
            store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm"))


def exposes_private(path: Path, config: Config) -> bool:
    """Whether serving ``path`` (a file, or a folder and everything in it) would serve one of
    :func:`private_paths`."""
    target = path.expanduser().resolve()
    for private in private_paths(config):
        private = private.expanduser().resolve()
        if target == private or private in target.parents or target in private.parents:
            return True
    return False


# -- the inspector's side ---------------------------------------------------------------------


class PluginHooks(Protocol):
    """What :meth:`SettingsRegistry.collect` needs of :class:`nectoproxy.plugins.PluginHost`
    (named by shape, so that this module does not import the plugin machinery, which imports
    the built-in plugins, which use this module)."""

    config: Config

    def implementations(self, hook: str) -> Sequence[Any]: ...

    def report_failure(self, plugin: str, hook: str, exc: BaseException) -> None: ...


class SettingsRegistry:
    """The providers the inspector serves, and a log of changes for the event socket."""

    def __init__(self, providers: Iterable[SettingsProvider] = ()) -> None:
        self.providers: dict[str, SettingsProvider] = {}
        self.version = 0
        self._changes: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._locks: dict[str, anyio.Lock] = {}
        for provider in providers:
            self.add(provider)

    def add(self, provider: SettingsProvider, owner: str = "") -> None:
        where = f"plugin {owner!r}: " if owner else ""
        if not isinstance(provider, SettingsProvider):
            raise TypeError(f"{where}on_settings returned {provider!r}, not a SettingsProvider "
                            "(name, title, description, schema, get, put)")
        name = provider.name
        if not name or not all(c.isascii() and (c.isalnum() or c == "-") for c in name) \
                or name != name.lower():
            raise ValueError(f"{where}settings name {name!r}: use lower-case letters, digits "
                             "and dashes")
        if name in self.providers:
            raise ValueError(f"{where}settings name {name!r} is already taken")
        self.providers[name] = provider

    def collect(self, hooks: PluginHooks) -> None:
        """Ask every active plugin's ``on_settings`` for its providers. A plugin that fails, or
        returns something else than providers, is logged and left out."""
        arguments = {"config": hooks.config}
        for impl in hooks.implementations("on_settings"):
            try:
                offered = impl.function(*[arguments[name] for name in impl.argnames])
                for provider in offered or ():
                    self.add(provider, impl.plugin_name)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the inspector
                hooks.report_failure(impl.plugin_name, "on_settings", exc)

    def get(self, name: str) -> SettingsProvider | None:
        return self.providers.get(name)

    def lock(self, name: str) -> anyio.Lock:
        """Held around a read-modify-write of ``name`` (two API calls never interleave)."""
        return self._locks.setdefault(name, anyio.Lock())

    def changed(self, name: str) -> None:
        """``name`` was changed (announced on the event socket)."""
        with self._lock:
            self.version += 1
            self._changes.append((self.version, name))
            del self._changes[:-1000]  # (a client that far behind misses the oldest)

    def changes_since(self, version: int) -> list[tuple[int, str]]:
        """The changes after ``version``, oldest first, as (version, name)."""
        with self._lock:
            return [change for change in self._changes if change[0] > version]
