"""The ``nectoproxy`` command in a test: start it, wait for its banner, read the addresses.

::

    with run_nectoproxy("--no-config", "--listen-host", "127.0.0.1", "--listen-port", "0",
                        "--web-port", "0", home=tmp_path) as proxy:
        with proxy.client() as client:       # through the proxy
            client.get(url)
        with proxy.api() as api:             # the inspector's API, with the token
            api.get("/api/health")
    assert proxy.returncode == 0, proxy.output()

:func:`run_nectoproxy` starts ``python -m nectoproxy`` with the arguments (and only ``PATH``,
``NECTOPROXY_HOME`` and the given variables in its environment), waits for the banner (its
last line is ``CA certificate: ...``), and gives a :class:`NectoProxyCommand` with what the
banner says: the listeners, the inspector's URL (with its token), the number of worker
processes. On leaving the block it stops the command (SIGTERM, then a kill if it does not end
in time). The command's standard error is read all along by a thread (so it never blocks on a
full pipe); a failure in the block, or a banner that never comes, is reported with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

#: ``NectoProxy listening on 127.0.0.1:8080 (regular mode) (2 worker processes)``
LISTENING = re.compile(r"^NectoProxy listening on (?P<host>\S+):(?P<port>\d+)"
                       r"(?: \((?P<mode>.+?) mode\))?(?: \((?P<workers>\d+) worker processes\))?$")
#: ``Inspector: http://127.0.0.1:8081/?token=...  (session: Run 1)``
INSPECTOR = re.compile(r"^Inspector: (?P<url>http://(?P<host>[^/\s]+):(?P<port>\d+)/"
                       r"\?token=(?P<token>\S+))")
#: The banner's last line.
BANNER_END = "CA certificate: "
#: How long the command may take to show its banner, and to stop.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


@dataclasses.dataclass(frozen=True)
class Listener:
    """One ``NectoProxy listening on`` line: the address, and the mode when it is named
    (only with ``--mode``/``proxy.listen``)."""

    host: str
    port: int
    mode: str = ""


class NectoProxyCommand:
    """A running ``nectoproxy`` command and what its banner said."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.listening: list[Listener] = []
        self.workers = 1
        #: The inspector's URL with its token ("" without the web UI).
        self.inspector_url = ""
        self.web_port = 0
        self.token = ""
        #: The banner's lines, and whatever the command wrote before it.
        self.banner: list[str] = []
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._banner_shown = False
        self._banner_read = threading.Event()  # (shown, or the output ended before it)
        self._reader = threading.Thread(target=self._read, name="nectoproxy stderr",
                                        daemon=True)
        self._reader.start()

    @property
    def port(self) -> int:
        """The first listener's port (the proxy's, without ``--mode``)."""
        assert self.listening, self.output()
        return self.listening[0].port

    def client(self, **options: Any) -> httpx.Client:
        """An httpx client through the proxy (its first listener); ``options`` go to httpx
        (``verify=``, say)."""
        listener = self.listening[0] if self.listening else Listener("127.0.0.1", self.port)
        return httpx.Client(proxy=f"http://{listener.host}:{listener.port}", trust_env=False,
                            timeout=30, **options)

    def api(self) -> httpx.Client:
        """An httpx client of the inspector's API, with its token."""
        assert self.inspector_url, f"the banner shows no inspector:\n{self.output()}"
        base = self.inspector_url.split("/?", 1)[0]
        return httpx.Client(base_url=base, trust_env=False, timeout=30,
                            headers={"Authorization": f"Bearer {self.token}"})

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def output(self) -> str:
        """What the command wrote on standard error so far (all of it, once it stopped)."""
        with self._lock:
            return "".join(self._lines)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self._lines.append(line)
            if not self._banner_read.is_set():
                self._parse(line)
        self._banner_read.set()

    def _parse(self, line: str) -> None:
        self.banner.append(line)
        text = line.rstrip("\n")
        listening = LISTENING.match(text)
        if listening:
            self.listening.append(Listener(listening["host"], int(listening["port"]),
                                           listening["mode"] or ""))
            self.workers = int(listening["workers"] or 1)
        inspector = INSPECTOR.match(text)
        if inspector:
            self.inspector_url = inspector["url"]
            self.web_port, self.token = int(inspector["port"]), inspector["token"]
        if text.startswith(BANNER_END):
            self._banner_shown = True
            self._banner_read.set()

    def wait_for_banner(self, timeout: float = START_TIMEOUT) -> None:
        """Until the banner's last line; AssertionError with the output if the command ends
        before it, or does not show it within ``timeout`` seconds."""
        if not self._banner_read.wait(timeout):
            raise AssertionError(f"nectoproxy showed no banner in {timeout:g} s:\n"
                                 f"{self.output()}")
        if not self._banner_shown:
            self.process.wait(STOP_TIMEOUT)
            raise AssertionError(f"nectoproxy exited ({self.process.returncode}) before its "
                                 f"banner:\n{self.output()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (unless it ended already), then a kill if it has not ended within
        ``timeout`` seconds; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        if self.process.stderr is not None and not self._reader.is_alive():
            self.process.stderr.close()
        return self.process.returncode


@contextlib.contextmanager
def run_nectoproxy(*args: str, home: Path | None = None, env: Mapping[str, str] | None = None,
                   timeout: float = START_TIMEOUT) -> Iterator[NectoProxyCommand]:
    """Start ``python -m nectoproxy *args``, wait for its banner, stop it at the end.

    The environment is ``PATH``, ``NECTOPROXY_HOME`` (``home``, if given) and ``env``: nothing
    of the test runner's own ``NECTOPROXY_*`` settings leaks in. An exception in the block gets
    the command's output as a note, so the test's report shows it.
    """
    environ = {"PATH": os.environ["PATH"]}
    if home is not None:
        environ["NECTOPROXY_HOME"] = str(home)
    environ.update(env or {})
    process = subprocess.Popen([sys.executable, "-m", "nectoproxy", *args], env=environ,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    command = NectoProxyCommand(process)
    try:
        command.wait_for_banner(timeout)  # (its error has the output in it)
    except BaseException:
        command.stop()
        raise
    try:
        yield command
    except Exception as exc:
        command.stop()
        exc.add_note(f"nectoproxy {' '.join(args)} wrote:\n{command.output()}")
        raise
    finally:
        command.stop()
