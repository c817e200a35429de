"""Running the proxy from the command line: signals, banners, and ``workers = N`` processes.

With several workers, every process listens on the same port (SO_REUSEPORT) and the kernel
spreads new connections over them, so a machine with more cores serves more. The first
process creates the CA before the others start, and certificate cache files are written
atomically, so workers never read half a file. Each worker also gets a pipe to the first
process, over which its flows paused at breakpoints are listed and resumed
(:mod:`nectoproxy.breakpointlink`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import anyio

from nectoproxy.config import Config
from nectoproxy.logs import setup_logging
from nectoproxy.proxy.memory import fix_mmap_threshold
from nectoproxy.proxy.server import Proxy

if TYPE_CHECKING:
    from nectoproxy.inspector import Inspector


def worker_count(config: Config) -> int:
    return config.proxy.workers or os.cpu_count() or 1


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def serve(config: Config, scripts: list[str]) -> int:
    """Serve until a signal; start ``workers - 1`` more processes once the port is bound."""
    anyio.run(_serve, config, scripts, True, backend_options=_backend_options())
    return 0


def _worker_main(config: Config, scripts: list[str], link: Connection | None
                 ) -> None:  # pragma: no cover - subprocess
    setup_logging(config)
    anyio.run(_serve, config, scripts, False, link, backend_options=_backend_options())


async def _serve(config: Config, scripts: list[str], primary: bool,
                 link: Connection | None = None) -> None:
    fix_mmap_threshold()  # a process that runs for days: see nectoproxy.proxy.memory
    children: list[multiprocessing.process.BaseProcess] = []
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def force() -> None:
            async for _ in signals:
                for child in children:
                    child.kill()
                os._exit(130)

        async with anyio.create_task_group() as tg, contextlib.AsyncExitStack() as stack:
            inspector = None
            if config.web.enabled:
                from nectoproxy.inspector import Inspector

                inspector = await anyio.to_thread.run_sync(
                    lambda: Inspector(config, primary=primary))
                # Closed after the proxy and the web server stopped: flows finishing in the
                # grace time are kept.
                stack.push_async_callback(anyio.to_thread.run_sync, inspector.close)
            plugins = inspector.plugins if inspector is not None else []
            proxy = Proxy(config, plugins=plugins, scripts=scripts)
            if inspector is not None:
                await stack.enter_async_context(inspector.running(proxy.ca_path))
            async with proxy:
                if inspector is not None:
                    inspector.proxy_started(proxy.address, proxy.hooks)
                    if link is not None and inspector.breakpoints is not None:
                        from nectoproxy.breakpointlink import PrimaryLink

                        PrimaryLink(inspector.breakpoints.paused, link).start()
                if primary:
                    _start_workers(config, scripts, proxy, inspector, children)
                    _banner(proxy, worker_count(config), inspector)
                async for _ in signals:
                    if primary:
                        print("Shutting down (again to force)...", file=sys.stderr)
                    break
                tg.start_soon(force)
                for child in children:
                    if child.pid is not None:
                        os.kill(child.pid, signal.SIGTERM)
            await anyio.to_thread.run_sync(_join, children)
            tg.cancel_scope.cancel()


def _start_workers(config: Config, scripts: list[str], proxy: Proxy,
                   inspector: Inspector | None,
                   children: list[multiprocessing.process.BaseProcess]) -> None:
    count = worker_count(config)
    if count < 2:
        return
    # Workers bind the port this process got (matters with port 0), and capture with the
    # same token (a replay may reach any of them).
    web = {"token": inspector.token} if inspector is not None else {}
    bound = [{**dataclasses.asdict(mode), "port": address[1]}
             for mode, address in proxy.listening]
    ports: dict[str, Any] = {"listen": bound} if config.proxy.listen \
        else {"listen_port": proxy.address[1]}
    same_port = config.replace(proxy=ports, web=web)
    context = multiprocessing.get_context("spawn")
    breakpoints = inspector.breakpoints if inspector is not None else None
    for _ in range(count - 1):
        ours, theirs = context.Pipe() if breakpoints is not None else (None, None)
        child: multiprocessing.process.BaseProcess = context.Process(
            target=_worker_main, args=(same_port, scripts, theirs), daemon=True)
        child.start()
        children.append(child)
        if breakpoints is not None and ours is not None and theirs is not None:
            from nectoproxy.breakpointlink import WorkerLink

            theirs.close()  # (the child has its copy: when it ends, ours reads EOF)
            WorkerLink(breakpoints.paused, ours)


def _join(children: list[multiprocessing.process.BaseProcess]) -> None:
    for child in children:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()


def _banner(proxy: Proxy, count: int, inspector: Inspector | None) -> None:
    workers = f" ({count} worker processes)" if count > 1 else ""
    for mode, (host, port) in proxy.listening:
        shown = "" if not proxy.config.proxy.listen else f" ({mode} mode)"
        print(f"NectoProxy listening on {host}:{port}{shown}{workers}", file=sys.stderr)
    if inspector is not None and inspector.address is not None:
        session = f"  (session: {inspector.session.name})" if inspector.session else ""
        print(f"Inspector: {inspector.url}{session}", file=sys.stderr)
    elif inspector is not None:
        print(f"Capturing to {inspector.path} (web UI off)", file=sys.stderr)
    print(f"CA certificate: {proxy.ca_path}  (trust it: "
          f"`nectoproxy cert install`, or open http://{proxy.config.proxy.onboarding_host}/ "
          "through the proxy)", file=sys.stderr)
