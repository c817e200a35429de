"""``nectoproxy sessions``: list, create, activate, rename, delete, export and import the
capture sessions of the flow store from a terminal.

``nectoproxy.cli`` owns the top-level parser and calls :func:`add_sessions_parser` and
:func:`run_sessions`, as it does for ``cert``. The store is ``Config.store_path`` (``[web]
store``, default ``$NECTOPROXY_HOME/flows.db``). Reading commands never create it: ``list``
says there is none yet, the others fail; ``create`` and ``import`` create it (owner-only, like
the proxy does). Results go to stdout, problems to stderr as one line each; the exit code is
1 for a failure (unknown session, bad HAR, unreadable store) and 2 for a bad argument (a
filter that does not parse).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the store is imported when a sessions command runs, not for every command
    from nectoproxy.config import Config
    from nectoproxy.store import Session, SQLiteStore

PROG = "nectoproxy sessions"


class UsageError(Exception):
    """An argument that cannot work; exit 2."""


def add_sessions_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                        config_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``sessions`` and its actions; ``config_options`` adds ``--config`` and friends."""
    sessions = subparsers.add_parser(
        "sessions", help="list, create, activate, rename, delete, export or import sessions",
        description="Capture sessions of the flow store ([web] store, default "
                    "$NECTOPROXY_HOME/flows.db). REF is a session's id or name.")
    config_options(sessions)
    actions = sessions.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        config_options(parser)
        return parser

    listing = action("list", "list the sessions (* marks the active one)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    create = action("create", "create a session")
    create.add_argument("name")
    create.add_argument("--activate", action="store_true", help="capture new flows into it")
    action("activate", "capture new flows into this session").add_argument("ref")
    rename = action("rename", "rename a session")
    rename.add_argument("ref")
    rename.add_argument("name")
    delete = action("delete", "delete a session with its flows")
    delete.add_argument("ref")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    export = action("export", "write a session's flows as a HAR 1.2 file")
    export.add_argument("ref")
    export.add_argument("-o", "--output", metavar="FILE",
                        help="where to write ('-' or none: standard output)")
    export.add_argument("--filter", metavar="EXPR",
                        help="only the flows matching this filter (see docs/store.md)")
    imported = action("import", "make a new session of a HAR file's entries")
    imported.add_argument("file", help="a HAR file ('-': standard input)")
    imported.add_argument("--name", help="the new session's name (default: Imported <file>)")


def run_sessions(args: argparse.Namespace, config: Config) -> int:
    """Carry out a parsed ``sessions`` command: 0 on success, 1 on failure, 2 on misuse."""
    from nectoproxy.har import HarError
    from nectoproxy.store import SchemaVersionError, SQLiteStore, StoreError

    command = args.sessions_command
    path = config.store_path
    creates = command in ("create", "import")
    if not path.exists() and not creates:
        if command == "list":
            if args.json:
                print("[]")
            print(f"No flow store at {path} yet: the proxy creates it when it first captures "
                  "(or `nectoproxy sessions create NAME`).", file=sys.stderr if args.json
                  else sys.stdout)
            return 0
        return _error(f"no flow store at {path} (so no session {args.ref!r})")
    try:
        if creates:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with SQLiteStore(path, max_body_size=config.web.max_body_size) as store:
            return _ACTIONS[command](store, args, config)
    except UsageError as exc:
        return _error(str(exc), 2)
    except (SchemaVersionError, sqlite3.Error) as exc:
        return _error(f"flow store {path}: {exc}")
    except (StoreError, HarError) as exc:  # an unknown session, a bad name, a bad HAR
        return _error(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")


def _error(message: str, code: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _find(store: SQLiteStore, ref: str) -> Session:
    from nectoproxy.store import SessionNotFound

    session = store.find_session(ref)
    if session is None:
        raise SessionNotFound(f"no session {ref!r} (see `nectoproxy sessions list`)")
    return session


def _label(session: Session) -> str:
    return f"session {session.id} {session.name!r}"


def size_text(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _list(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    sessions = store.list_sessions()
    if args.json:
        print(json.dumps([s.to_json() for s in sessions], indent=2))
        return 0
    if not sessions:
        print(f"No sessions in {store.path} yet.")
        return 0
    width = max(4, *(len(s.name) for s in sessions))
    id_width = max(2, *(len(str(s.id)) for s in sessions))
    print(f"  {'ID':>{id_width}}  {'NAME':<{width}}  {'FLOWS':>9}  {'STORED':>10}  CREATED")
    for s in sessions:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.created_at))
        print(f"{'*' if s.active else ' '} {s.id:>{id_width}}  {s.name:<{width}}  "
              f"{s.flow_count:>9,}  {size_text(s.stored_bytes):>10}  {created}")
    print(f"(* active: new flows go to it)  {store.path}")
    return 0


def _create(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    session = store.create_session(args.name)
    if args.activate:
        session = store.activate_session(session.id)
    print(f"Created {_label(session)}{' (active)' if session.active else ''}")
    return 0


def _activate(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    session = store.activate_session(_find(store, args.ref).id)
    print(f"Activated {_label(session)}: new flows go to it (a running proxy too)")
    return 0


def _rename(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    session = _find(store, args.ref)
    renamed = store.rename_session(session.id, args.name)
    print(f"Renamed session {session.id} {session.name!r} to {renamed.name!r}")
    return 0


def _delete(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    session = _find(store, args.ref)
    what = f"{_label(session)} ({session.flow_count:,} flows, {size_text(session.stored_bytes)})"
    if not args.yes:
        if not sys.stdin.isatty():
            return _error(f"refusing to delete {what} without confirmation; run on a terminal "
                          "or pass --yes")
        try:
            answer = input(f"Delete {what}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Aborted; nothing was deleted.")
            return 1
    store.delete_session(session.id)
    print(f"Deleted {what}")
    if session.active:
        print(f"Active now: {_label(store.active_session())}")
    return 0


def _export(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    from nectoproxy import __version__
    from nectoproxy.har import iter_har_json, iter_session_entries
    from nectoproxy.store import FilterError

    session = _find(store, args.ref)
    try:
        entries = iter_session_entries(store, session.id, args.filter)
    except FilterError as exc:
        raise UsageError(f"invalid filter {args.filter!r}: {exc}") from None
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for entry in entries:
            count += 1
            yield entry

    pieces = iter_har_json(counted(), version=__version__,
                           comment=f"NectoProxy session {session.id}: {session.name}")
    if args.output in (None, "-"):
        return _to_stdout(pieces)
    target = Path(args.output)
    _write_private(target, pieces)
    print(f"Exported {count:,} flows of {_label(session)} to {target}")
    return 0


def _to_stdout(pieces: Iterator[str]) -> int:
    out: IO[bytes] | None = getattr(sys.stdout, "buffer", None)
    try:
        if out is None:
            for piece in pieces:
                sys.stdout.write(piece)
        else:
            sys.stdout.flush()
            for piece in pieces:
                out.write(piece.encode("utf-8"))
            out.flush()
    except BrokenPipeError:  # `... | head`: the reader is gone, which is not our failure
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def _write_private(target: Path, pieces: Iterator[str]) -> None:
    """Write ``pieces`` to ``target`` owner-only (a HAR holds cookies and tokens), through a
    temporary file renamed at the end, so an error leaves no half-written HAR behind."""
    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")  # mode 0600
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "wb") as file:
            for piece in pieces:
                file.write(piece.encode("utf-8"))
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise


def _import(store: SQLiteStore, args: argparse.Namespace, config: Config) -> int:
    from nectoproxy.har import import_har

    if args.file == "-":
        session = import_har(store, sys.stdin.buffer.read(), name=args.name)
    else:
        session = import_har(store, Path(args.file), name=args.name)
    print(f"Imported {session.flow_count:,} flows into {_label(session)} "
          f"(`nectoproxy sessions activate {session.id}` to capture into it)")
    _warn_if_retention_deletes(store, session, config.web.max_age_days)
    return 0


def _warn_if_retention_deletes(store: SQLiteStore, session: Session, max_age_days: float) -> None:
    """Retention goes by when a flow started: a HAR from long ago does not last."""
    oldest = store.list_flows(session.id, order="oldest", limit=1)[0]
    if max_age_days > 0 and oldest and oldest[0].started_at < time.time() - max_age_days * 86400:
        print(f"{PROG}: warning: flows of this HAR started more than {max_age_days:g} days ago "
              "([web] max_age_days): retention will delete them", file=sys.stderr)


_ACTIONS: dict[str, Callable[[SQLiteStore, argparse.Namespace, Config], int]] = {
    "list": _list,
    "create": _create,
    "activate": _activate,
    "rename": _rename,
    "delete": _delete,
    "export": _export,
    "import": _import,
}
