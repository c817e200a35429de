"""NectoProxy's benchmark suite (issue 6): one command, every scenario, one table.

    python benchmarks/run.py [--duration 10] [--connections 50] [--pin]
                             [--scenarios plain,https,...] [--json out.json]

Starts an origin on 127.0.0.1 (nginx when installed, else benchmarks/origin.py), starts
NectoProxy as a separate process, and runs each scenario for a bounded time twice: straight to
the origin, then through the proxy. ``--pin`` puts the proxy on core 0 and the origin and load
generator on core 1 (taskset). See benchmarks/README.md. Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hey
import origin
import peers
import procs
import report
import wrk

HERE = Path(__file__).resolve().parent
SCENARIOS = ("plain", "https", "https-newconn", "first-host", "download-http", "download-https",
             "idle", "capture-plain", "capture-https", "capture-download")
#: Scenarios run only when named in ``--scenarios``.
EXTRA_SCENARIOS = ("two-core",)
SNI = "www.bench.test"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, children: procs.Children) -> None:
        self.args = args
        self.tmp = tmp
        self.children = children
        self.proxy_core = 0 if args.pin else None
        self.load_core = 1 if args.pin else None
        self.rows: list[dict[str, Any]] = []
        #: goal key -> [(share of the proxy core others took, no-proxy figure, proxy figure)]
        self.candidates: dict[str, list[tuple[float, float | None, float | None]]] = {}
        self.meta: dict[str, Any] = {}
        self.wrk = wrk.wrk_binary() if args.loadgen == "auto" else None
        #: A nectoproxy.toml for the proxy (None: ``--no-config``, the defaults).
        self.config_text: str | None = None
        self.hey = hey.hey_binary() if args.loadgen == "auto" else None
        self.current = ""
        #: Whether the proxy measured serves from several processes (sample the whole tree).
        self.tree = False
        self.proxy_log_path = tmp / "proxy.log"
        self.peers: list[peers.Peer] = args.peer_list
        #: Peer name -> the bin folder of its venv (peers that could not be installed: absent).
        self.peer_bins: dict[str, Path] = {}
        self.notes: list[str] = []
        #: The rows of the side-by-side scenarios (``--peers``, ``two-core``), every repeat.
        self.side: list[dict[str, Any]] = []

    # -- processes ---------------------------------------------------------------------------

    def start_origin(self) -> None:
        self.files = origin.make_files(self.tmp / "origin")
        self.http_port, self.https_port = procs.free_port(), procs.free_port()
        nginx = origin.nginx_binary() if self.args.origin in ("auto", "nginx") else None
        if self.args.origin == "nginx" and nginx is None:
            raise SystemExit("--origin nginx: nginx is not installed (apt-get install nginx)")
        if nginx:
            config = origin.nginx_config(self.files, self.http_port, self.https_port)
            command = origin.nginx_command(nginx, self.files, config)
            version = subprocess.run([nginx, "-v"], capture_output=True, text=True,
                                     check=False).stderr
            self.meta["origin"] = version.strip().rpartition(" ")[2] or "nginx"
        else:
            command = origin.python_command(self.files, self.http_port, self.https_port)
            self.meta["origin"] = "python (benchmarks/origin.py)"
        print(f"origin: {self.meta['origin']} on 127.0.0.1:{self.http_port} (HTTP) and "
              f":{self.https_port} (HTTPS)", flush=True)
        process = self.children.start(procs.pinned(command, self.load_core),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in (self.http_port, self.https_port):
            procs.wait_for_port(port, 15, process)
        self.origin = process

    def start_proxy(self, record: bool = True, capture: bool | None = None) -> None:
        """``capture``: run the inspector (capture into a store in the temporary directory);
        None: as ``--capture`` says."""
        self.proxy_port = procs.free_port()
        self.certs = self.tmp / "certs"
        python = [sys.executable]
        if self.args.cprofile:
            python += ["-m", "cProfile", "-o", str(Path(self.args.cprofile).resolve())]
        capture = self.args.capture == "on" if capture is None else capture
        command = self.necto_command(python, self.proxy_port, self.config_text, capture)
        env = {**os.environ, "NECTOPROXY_HOME": str(self.tmp / "home")}
        # Lives as long as the proxy does, so no ``with``.
        self.proxy_log = open(self.tmp / "proxy.log", "a")  # noqa: SIM115
        self.proxy = self.children.start(procs.pinned(command, self.proxy_core), cwd=self.tmp,
                                         stdout=self.proxy_log, stderr=subprocess.STDOUT,
                                         env=env)
        procs.wait_for_port(self.proxy_port, 60, self.proxy)
        self.proxy_ca = self.certs / "ca.pem"
        time.sleep(1.0)
        startup = procs.rss_kib(self.proxy.pid) / 1024
        build = engine_build()
        self.meta.setdefault("proxy_builds", []).append(build)
        print(f"NectoProxy pid {self.proxy.pid} on 127.0.0.1:{self.proxy_port} (code {build}); "
              f"resident memory after start {startup:.1f} MiB", flush=True)
        if not record:
            return
        self.rows.append({"scenario": "startup", "run": "proxy", "figure": round(startup, 1),
                          "unit": "MiB"})
        self.offer("startup", None, round(startup, 1))

    def necto_command(self, python: list[str], port: int, config_text: str | None,
                      capture: bool, name: str = "nectoproxy.toml") -> list[str]:
        config = ["--no-config"]
        if config_text:
            (self.tmp / name).write_text(config_text)
            config = ["--config", str(self.tmp / name)]
        command = [*python, "-m", "nectoproxy", *config, "--listen-host", "127.0.0.1",
                   "--listen-port", str(port), "--certs-dir", str(self.certs),
                   "--upstream-ca", str(self.files.ca), "-q"]
        if not self.args.entry_points:
            command.append("--no-entry-points")  # measure NectoProxy, not what pip put beside it
        return command + (["--web-port", "0"] if capture else ["--no-web"])

    def restart_proxy(self, capture: bool | None = None) -> None:
        """A fresh proxy, so that memory freed by earlier scenarios does not hide new use."""
        self.children.stop(self.proxy)
        self.proxy_log.close()
        self.start_proxy(record=False, capture=capture)

    def offer(self, key: str, direct: float | None, proxied: float | None,
              others: float = 0.0) -> None:
        self.candidates.setdefault(key, []).append((others, direct, proxied))

    def figures(self) -> dict[str, tuple[float | None, float | None]]:
        """Per goal, the figures of the least disturbed repeat (memory growth: the largest)."""
        chosen: dict[str, tuple[float | None, float | None]] = {}
        for key, offers in self.candidates.items():
            if key in ("download-growth", "capture-download-growth"):
                chosen[key] = (None, max((p for _, _, p in offers if p is not None),
                                         default=None))
            else:
                _, direct, proxied = min(offers, key=lambda offer: offer[0])
                chosen[key] = (direct, proxied)
        return chosen

    def check_proxy(self) -> None:
        if self.proxy.poll() is not None:
            self.proxy_log.flush()
            tail = self.proxy_log_path.read_text()[-3000:]
            raise RuntimeError(f"the proxy exited with {self.proxy.returncode}:\n{tail}")

    # -- load generators ---------------------------------------------------------------------

    def _target(self, via_proxy: bool, tls: bool) -> list[str]:
        argv = ["--port", str(self.https_port if tls else self.http_port)]
        if via_proxy:
            argv += ["--proxy-port", str(self.proxy_port)]
        if tls:
            ca = self.proxy_ca if via_proxy else self.files.ca
            argv += ["--tls", "--sni", SNI, "--cafile", str(ca)]
        return argv

    def loadgen(self, mode: str, via_proxy: bool, tls: bool, *extra: str,
                timeout: float = 0) -> dict[str, Any]:
        argv = [mode, *self._target(via_proxy, tls), *extra]
        command = procs.pinned([sys.executable, str(HERE / "loadgen.py"), *argv], self.load_core)
        sampler = procs.Sampler(self.proxy.pid, self.proxy_core) if via_proxy else None
        profiled = self.profiled(self.args.duration + self.args.warmup) if via_proxy \
            else contextlib.nullcontext()
        with open(self.tmp / "loadgen.err", "a") as errors, profiled:
            process = self.children.start(command, stdout=subprocess.PIPE, stderr=errors,
                                          text=True)
            watchdog = threading.Timer(timeout or self.args.duration * 3 + 60, process.kill)
            watchdog.start()
            last, began = "", False
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    line = line.strip()
                    if line == "START" and sampler:
                        sampler.begin()
                        began = True
                    elif line == "END" and sampler and began:
                        sampler.end()
                        began = False
                    elif line:
                        last = line
                process.wait()
            finally:
                watchdog.cancel()
                if began and sampler:
                    sampler.end()
                self.children.stop(process)
        if process.returncode != 0 or not last.startswith("{"):
            err = (self.tmp / "loadgen.err").read_text()[-2000:]
            raise RuntimeError(f"loadgen {' '.join(argv)} failed ({process.returncode}):\n{err}")
        result: dict[str, Any] = json.loads(last)
        result["generator"] = "loadgen.py"
        if sampler:
            self._add_proxy_figures(result, sampler)
        self.check_proxy()
        return result

    def run_wrk(self, via_proxy: bool, tls: bool, seconds: float) -> dict[str, Any]:
        assert self.wrk is not None
        scheme, port = ("https", self.https_port) if tls else ("http", self.http_port)
        if via_proxy:
            url = f"http://127.0.0.1:{self.proxy_port}/"
            script = wrk.proxy_script(self.tmp, port, "/1k")
        else:
            url, script = f"{scheme}://127.0.0.1:{port}/1k", None
        command = procs.pinned(wrk.command(self.wrk, url, self.args.connections, seconds,
                                           script), self.load_core)
        sampler = procs.Sampler(self.proxy.pid, self.proxy_core, tree=self.tree) if via_proxy \
            else None
        if sampler:
            sampler.begin()
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                              check=False)
        if sampler:
            sampler.end()
        result = wrk.parse(done.stdout)
        result["generator"] = "wrk"
        if sampler:
            self._add_proxy_figures(result, sampler)
        self.check_proxy()
        return result

    def run_hey(self, seconds: float, via_proxy: bool = True) -> dict[str, Any]:
        """HTTPS keep-alive through the proxy (CONNECT, intercepted) with hey, or (not
        ``via_proxy``) straight to the origin."""
        assert self.hey is not None
        url = f"https://127.0.0.1:{self.https_port}/1k"
        proxy = f"http://127.0.0.1:{self.proxy_port}" if via_proxy else None
        command = procs.pinned(hey.command(self.hey, url, self.args.connections, seconds,
                                           proxy), self.load_core)
        sampler = procs.Sampler(self.proxy.pid, self.proxy_core, tree=self.tree) if via_proxy \
            else None
        if sampler:
            sampler.begin()
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                              check=False)
        if sampler:
            sampler.end()
        with open(self.tmp / "hey.out", "a") as report:
            report.write(done.stdout)
        result = hey.parse(done.stdout)
        if done.returncode != 0 or "rps" not in result:
            raise RuntimeError(f"hey failed ({done.returncode}): {done.stderr[-2000:]}")
        result["generator"] = "hey"
        if sampler:
            self._add_proxy_figures(result, sampler)
            self.check_proxy()
        return result

    @staticmethod
    def _add_proxy_figures(result: dict[str, Any], sampler: procs.Sampler) -> None:
        result["peak_rss_mib"] = round(sampler.peak_kib / 1024, 1)
        result["rss_before_mib"] = round(sampler.rss_before / 1024, 1)
        result["growth_mib"] = round((sampler.peak_kib - sampler.rss_before) / 1024, 1)
        cpu = sampler.tree_cpu  # with ``tree``: every process of the proxy
        result["cpu_s"] = round(cpu, 3)
        result["writer_cpu_s"] = 0.0 if sampler.tree else round(sampler.children_cpu, 3)
        if result.get("requests"):
            result["cpu_s_per_1k"] = round(cpu / result["requests"] * 1000, 4)
            if sampler.children_cpu and not sampler.tree:
                result["writer_cpu_s_per_1k"] = round(
                    sampler.children_cpu / result["requests"] * 1000, 4)
            if cpu > 0:
                # What one whole core would serve: steadier than req/s when others share it.
                result["rps_per_cpu_s"] = round(result["requests"] / cpu)
        if sampler.others_share is not None:
            result["others_on_proxy_core_pct"] = round(sampler.others_share * 100, 1)
        result["loadavg"] = round(os.getloadavg()[0], 2)

    # -- scenarios ---------------------------------------------------------------------------

    def record(self, scenario: str, direct: dict[str, Any], proxied: dict[str, Any], key: str,
               unit: str, goal: str | None = None, higher_is_better: bool = True,
               extra: list[dict[str, Any]] | None = None) -> None:
        extra = extra or []
        for run, result in (("direct", direct), ("proxy", proxied)):
            result.update(scenario=scenario, run=run, figure=result.get(key), unit=unit)
        proxied["ratio_text"] = report.ratio_text(direct.get(key), proxied.get(key),
                                                  higher_is_better)
        self.rows += [direct, proxied, *extra]
        self.offer(goal or scenario, direct.get(key), proxied.get(key),
                   proxied.get("others_on_proxy_core_pct", 0.0))
        print(report.rows_table([direct, proxied, *extra]), flush=True)

    def keepalive(self, tls: bool) -> dict[str, Any]:
        a = self.args
        common = ["--connections", str(a.connections), "--duration", str(a.duration),
                  "--warmup", str(a.warmup)]
        extra: list[dict[str, Any]] = []
        if self.wrk and not tls:
            self.run_wrk(False, False, a.warmup)
            direct = self.run_wrk(False, False, a.duration)
            self.run_wrk(True, False, a.warmup)
            proxied = self.run_wrk(True, False, a.duration)
        else:
            direct = self.loadgen("keepalive", False, tls, *common)
            proxied = self.loadgen("keepalive", True, tls, *common)
        if self.wrk and tls:
            row = self.run_wrk(False, True, a.duration)
            row.update(scenario="https", run="direct (wrk, reference)", figure=row["rps"],
                       unit="req/s")
            extra.append(row)
        return {"direct": direct, "proxied": proxied, "extra": extra}

    @contextlib.contextmanager
    def profiled(self, seconds: float) -> Iterator[None]:
        """py-spy samples the proxy meanwhile, when ``--profile DIR`` names this scenario."""
        wanted = self.args.profile_scenarios.split(",")
        if not self.args.profile or not (self.current in wanted or
                                         self.current.rsplit("-", 1)[0] in wanted):
            yield
            return
        out = Path(self.args.profile).resolve()
        out.mkdir(parents=True, exist_ok=True)
        result = out / f"{self.current}.txt"
        native = ["--native"] if self.args.profile_native else ["--nonblocking"]  # py-spy:
        # native stacks need the process paused per sample, so they slow the proxy down more
        spy = procs.pinned(["py-spy", "record", "--pid", str(self.proxy.pid), "--duration",
                            str(int(seconds) + 1), "--rate", "250", "--function", "--format",
                            "raw", "-o", str(result), *native], self.load_core)
        with open(out / "py-spy.log", "a") as log:
            sampler = self.children.start(spy, stdout=log, stderr=subprocess.STDOUT)
            try:
                yield
            finally:
                self.children.stop(sampler, signal.SIGINT, timeout=30)  # SIGINT: py-spy saves
        if result.exists():
            print(f"profile: {result} (python benchmarks/profile_summary.py {result})",
                  flush=True)
        else:
            print(f"py-spy failed: {(out / 'py-spy.log').read_text()[-500:]}", flush=True)

    def run(self, name: str) -> None:
        a = self.args
        self.current = name
        timeout = ["--timeout", "120"]
        print(f"\n== {name} ==", flush=True)
        if name in ("plain", "https") and self.peers:
            self.side_by_side(name)
        elif name == "two-core":
            self.two_core()
        elif name in ("plain", "https"):
            r = self.keepalive(tls=name == "https")
            self.record(name, r["direct"], r["proxied"], "rps", "req/s", extra=r["extra"])
        elif name == "https-newconn":
            args = ["--connections", str(a.connections), "--duration", str(a.duration)]
            self.record(name, self.loadgen("newconn", False, True, *args),
                        self.loadgen("newconn", True, True, *args), "rps", "req/s")
        elif name == "first-host":
            args = ["--duration", str(a.duration), "--max-requests", str(a.first_hosts),
                    "--tag", uuid.uuid4().hex[:8]]
            self.record(name, self.loadgen("firsthost", False, True, *args),
                        self.loadgen("firsthost", True, True, *args), "median_ms", "ms",
                        higher_is_better=False)
        elif name.startswith("download"):
            tls = name == "download-https"
            args = ["--path", "/100m", "--duration", str(a.duration), "--max-requests",
                    str(a.downloads), *timeout]
            direct = self.loadgen("download", False, tls, *args, timeout=a.duration + 300)
            proxied = self.loadgen("download", True, tls, *args, timeout=a.duration + 300)
            self.record(name, direct, proxied, "mb_per_s", "MB/s")
            self.offer("download-growth", None, proxied.get("growth_mib"))
        elif name == "idle":
            for tls in (False, True):
                self.idle(tls)
        elif name.startswith("capture-"):
            self.capture_compare(name)

    # -- peers side by side (issue 17) -------------------------------------------------------

    def prepare_peers(self) -> None:
        for peer in self.peers:
            bin_dir, note = peers.ensure(peer)
            print(f"peers: {note}", flush=True)
            self.notes.append(note)
            if bin_dir is not None:
                self.peer_bins[peer.name] = bin_dir
        if "proxy.py" in self.peer_bins:
            self.proxy_py_ca = peers.make_proxy_py_ca(self.tmp / "proxy.py-ca")

    @contextlib.contextmanager
    def serving(self, label: str, command: list[str], port: int, core: int | None,
                load_core: int | None, tree: bool,
                env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[Any]]:
        """Another proxy (a peer, or NectoProxy with workers) in the place of the bench's
        NectoProxy while the block runs: the load generators and samplers use it."""
        saved = (self.proxy, self.proxy_port, self.proxy_core, self.load_core, self.tree,
                 self.proxy_log, self.proxy_log_path)
        log_path = self.tmp / f"{label.replace(' ', '_').replace('/', '_')}.log"
        log = open(log_path, "a")  # noqa: SIM115 (closed below)
        process = self.children.start(procs.pinned(command, core), cwd=self.tmp, stdout=log,
                                      stderr=subprocess.STDOUT, env=env)
        try:
            procs.wait_for_port(port, 60, process)
            time.sleep(1.0)
            self.proxy, self.proxy_port, self.proxy_core, self.load_core, self.tree = \
                process, port, core, load_core, tree
            self.proxy_log, self.proxy_log_path = log, log_path
            yield process
        except RuntimeError:
            log.flush()
            print(f"  {label} failed: {log_path.read_text(errors='replace')[-1500:]}",
                  flush=True)
            raise
        finally:
            (self.proxy, self.proxy_port, self.proxy_core, self.load_core, self.tree,
             self.proxy_log, self.proxy_log_path) = saved
            self.children.stop(process)
            log.close()

    def side_load(self, tls: bool, via_proxy: bool) -> dict[str, Any]:
        """The side-by-side load: wrk for plain HTTP, hey for intercepted HTTPS (both keep-alive,
        ``--connections``, GET /1k), after an unmeasured warm-up."""
        a = self.args
        if tls:
            if self.hey is None:
                raise RuntimeError("--peers needs hey for HTTPS (apt-get install hey)")
            self.run_hey(a.warmup, via_proxy)
            return self.run_hey(a.duration, via_proxy)
        if self.wrk is None:
            raise RuntimeError("--peers needs wrk for plain HTTP (apt-get install wrk)")
        self.run_wrk(via_proxy, False, a.warmup)
        return self.run_wrk(via_proxy, False, a.duration)

    def peer_command(self, peer: peers.Peer, port: int, single: bool) -> list[str]:
        bin_dir = self.peer_bins[peer.name]
        if peer.name == "proxy.py":
            return peers.proxy_py_command(bin_dir, port, self.files.ca, self.proxy_py_ca,
                                          self.tmp / "proxy.py-certs", single)
        return peers.mitmdump_command(bin_dir, port, self.files.ca, self.tmp / "mitmproxy")

    def side_rows(self, scenario: str, rows: list[dict[str, Any]]) -> None:
        direct = rows[0]
        reference = next((r for r in rows if r["run"].startswith("proxy.py")), None)
        for row in rows:
            row.update(scenario=scenario, figure=row.get("rps"), unit="req/s",
                       loadavg=row.get("loadavg", round(os.getloadavg()[0], 2)))
            if row is not direct:
                row["ratio_text"] = report.ratio_text(direct.get("rps"), row.get("rps"), True)
            if reference is not None and row is not reference and row is not direct:
                row["vs_proxy_py"] = report.ratio_text(reference.get("rps"), row.get("rps"),
                                                       True)
        self.rows += rows
        self.side += rows
        print(report.rows_table(rows), flush=True)

    def side_by_side(self, name: str) -> None:
        """``plain`` / ``https`` with ``--peers``: direct, NectoProxy and each peer, one after
        the other, with the same load, pinned like NectoProxy (``--pin``)."""
        tls = name == "https"
        rows = [self.side_load(tls, False)]
        rows[0]["run"] = "direct"
        necto = self.side_load(tls, True)
        necto["run"] = "NectoProxy"
        rows.append(necto)
        self.offer(name, rows[0].get("rps"), necto.get("rps"),
                   necto.get("others_on_proxy_core_pct", 0.0))
        for peer in self.peers:
            if peer.name not in self.peer_bins:
                continue
            port = procs.free_port()
            label = peer.label + (" (1 acceptor)" if peer.name == "proxy.py" else "")
            with self.serving(label, self.peer_command(peer, port, single=True), port,
                              self.proxy_core, self.load_core, tree=True):
                row = self.side_load(tls, True)
            row["run"] = label
            rows.append(row)
        self.side_rows(name, rows)

    def two_core(self) -> None:
        """Nothing pinned: NectoProxy with ``workers = "auto"`` and proxy.py in its default
        multi-process mode (one acceptor per core), plain and intercepted HTTPS keep-alive."""
        cores = os.cpu_count() or 1
        with unpinned(self.origin.pid):
            for tls in (False, True):
                self._two_core(tls, cores)

    def _two_core(self, tls: bool, cores: int) -> None:
        scenario = "two-core https" if tls else "two-core plain"
        saved = self.proxy_core, self.load_core
        self.proxy_core = self.load_core = None
        try:
            rows = [self.side_load(tls, False)]
        finally:
            self.proxy_core, self.load_core = saved
        rows[0]["run"] = "direct"
        port = procs.free_port()
        command = self.necto_command([sys.executable], port, '[proxy]\nworkers = "auto"\n',
                                     False, name="nectoproxy-workers.toml")
        env = {**os.environ, "NECTOPROXY_HOME": str(self.tmp / "home-workers")}
        label = f"NectoProxy workers=auto ({cores})"
        with self.serving(label, command, port, None, None, tree=True, env=env):
            row = self.side_load(tls, True)
        row["run"] = label
        rows.append(row)
        if "proxy.py" in self.peer_bins:
            peer = peers.PEERS["proxy.py"]
            label = f"{peer.label} default ({cores} acceptors)"
            with self.serving(label, self.peer_command(peer, port := procs.free_port(),
                                                       single=False),
                              port, None, None, tree=True):
                row = self.side_load(tls, True)
            row["run"] = label
            rows.append(row)
        self.side_rows(scenario, rows)

    def capture_compare(self, name: str) -> None:
        """The same load through a proxy without and with capture (issue 13's goals: HTTPS
        keep-alive >= 75% and a 100 MiB download >= 90% of the capture-off rate; plain HTTP
        keep-alive with wrk as well, whose load leaves more of the machine to the proxy)."""
        a = self.args
        runs: dict[str, dict[str, Any]] = {}
        for capture in (False, True):
            self.restart_proxy(capture=capture)
            if name == "capture-https" and self.hey:  # a load that needs less of the CPU
                self.run_hey(a.warmup)
                self.current = f"{name}-{'on' if capture else 'off'}"
                with self.profiled(a.duration):
                    result = self.run_hey(a.duration)
                self.current = name
                key, unit = "rps", "req/s"
            elif name == "capture-https":
                args = ["--connections", str(a.connections), "--duration", str(a.duration),
                        "--warmup", str(a.warmup)]
                result = self.loadgen("keepalive", True, True, *args)
                key, unit = "rps", "req/s"
            elif name == "capture-plain":  # wrk when installed: a load that needs less CPU
                if self.wrk:
                    self.run_wrk(True, False, a.warmup)
                    result = self.run_wrk(True, False, a.duration)
                else:
                    result = self.loadgen("keepalive", True, False, "--connections",
                                          str(a.connections), "--duration", str(a.duration))
                key, unit = "rps", "req/s"
            else:
                args = ["--path", "/100m", "--duration", str(a.duration), "--max-requests",
                        str(a.downloads), "--timeout", "120"]
                result = self.loadgen("download", True, True, *args, timeout=a.duration + 300)
                key, unit = "mb_per_s", "MB/s"
            result.update(scenario=name, run="capture on" if capture else "capture off",
                          figure=result.get(key), unit=unit)
            runs["on" if capture else "off"] = result
        runs["on"]["ratio_text"] = report.ratio_text(runs["off"].get(key), runs["on"].get(key),
                                                     True)
        self.rows += [runs["off"], runs["on"]]
        self.offer(name, runs["off"].get(key), runs["on"].get(key),
                   runs["on"].get("others_on_proxy_core_pct", 0.0))
        if name == "capture-download":
            self.offer("capture-download-growth", None, runs["on"].get("growth_mib"))
        store = self.tmp / "home" / "flows.db"
        size = sum(f.stat().st_size for f in store.parent.glob("flows.db*")) if store.exists() \
            else 0
        print(report.rows_table([runs["off"], runs["on"]]), flush=True)
        print(f"  store now {size / 1024**2:.1f} MiB; proxy RSS growth with capture "
              f"{runs['on'].get('growth_mib')} MiB", flush=True)
        self.restart_proxy()

    def idle(self, tls: bool) -> None:
        a = self.args
        self.restart_proxy()
        before = procs.rss_kib(self.proxy.pid)
        argv = ["idle", *self._target(True, tls), "--connections", str(a.idle_connections),
                "--hold", "60", "--timeout", "30"]
        command = procs.pinned([sys.executable, str(HERE / "loadgen.py"), *argv], self.load_core)
        process = self.children.start(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        assert process.stdin is not None and process.stdout is not None
        watchdog = threading.Timer(120, process.kill)
        watchdog.start()
        try:
            ready = process.stdout.readline().split()
            held = int(ready[1]) if len(ready) == 2 and ready[0] == "READY" else 0
            time.sleep(1.0)
            after = procs.rss_kib(self.proxy.pid)
            process.stdin.write("\n")
            process.stdin.close()
            result = json.loads(process.stdout.read().strip().splitlines()[-1])
        finally:
            watchdog.cancel()
            self.children.stop(process)
        per = round((after - before) / held, 1) if held else None
        result.update(scenario="idle-https" if tls else "idle-http", run="proxy",
                      generator="loadgen.py", figure=per, unit="KiB/conn",
                      rss_before_mib=round(before / 1024, 1), peak_rss_mib=round(after / 1024, 1))
        self.rows.append(result)
        if not tls:
            self.offer("idle", None, per)
        print(report.rows_table([result]), flush=True)
        print(f"  {held} idle connections held; RSS {before / 1024:.1f} -> {after / 1024:.1f} "
              f"MiB", flush=True)
        self.check_proxy()

    def proxy_log_summary(self) -> tuple[list[str], list[str]]:
        """Warning/error lines the proxy logged while serving, and while shutting down."""
        self.proxy_log.flush()
        serving: list[str] = []
        stopping: list[str] = []
        into = serving
        for line in (self.tmp / "proxy.log").read_text(errors="replace").splitlines():
            if line.startswith("NectoProxy listening on"):
                into = serving
            elif line.startswith("Shutting down"):
                into = stopping
            elif line.startswith(("[error]", "[warning]", "Traceback", "  + Exception Group")) \
                    or "Error:" in line:
                into.append(line.strip())
        return serving[:50], stopping[:50]


@contextlib.contextmanager
def unpinned(pid: int) -> Iterator[None]:
    """The process and its descendants (the origin) on every core while the block runs."""
    everything = set(range(os.cpu_count() or 1))
    saved: dict[int, set[int]] = {}
    for each in (pid, *procs.descendants(pid)):
        with contextlib.suppress(OSError):
            saved[each] = os.sched_getaffinity(each)
            os.sched_setaffinity(each, everything)
    try:
        yield
    finally:
        for each, cores in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(each, cores)


def engine_build() -> str:
    """The commit the proxy runs, ``+dirty`` when nectoproxy/ has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True,
                              text=True, check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--", "nectoproxy")
    return (git("rev-parse", "--short", "HEAD") or "?") + ("+dirty" if dirty else "")


def describe_machine(args: argparse.Namespace) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import nectoproxy

    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop = "asyncio"
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": model,
            "cores": os.cpu_count(), "python": platform.python_version(), "loop": loop,
            "nectoproxy": nectoproxy.__version__, "pinned": args.pin,
            "duration": args.duration, "connections": args.connections,
            "loadavg_start": round(os.getloadavg()[0], 2)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="NectoProxy benchmark suite (issue 6)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pin", action="store_true",
                        help="proxy on core 0, origin and load generator on core 1 (taskset)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--origin", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--loadgen", choices=("auto", "python"), default="auto",
                        help="auto: wrk for plain HTTP keep-alive and hey for capture-https "
                             "when installed")
    parser.add_argument("--downloads", type=int, default=5, help="most 100 MiB downloads per run")
    parser.add_argument("--capture", choices=("off", "on"), default="off",
                        help="run the proxy with its inspector capturing (default off: like "
                             "the peers, which keep nothing; the capture-* scenarios compare)")
    parser.add_argument("--first-hosts", type=int, default=200, help="most never-seen hosts")
    parser.add_argument("--idle-connections", type=int, default=1000)
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy the proxy during the proxied runs of --profile-scenarios "
                             "(collapsed stacks in DIR/SCENARIO.txt)")
    parser.add_argument("--profile-scenarios", default="https", metavar="LIST",
                        help="scenarios to profile with --profile (default: https)")
    parser.add_argument("--profile-native", action="store_true",
                        help="with --profile: also sample C frames (OpenSSL, uvloop, syscalls)")
    parser.add_argument("--cprofile", metavar="FILE",
                        help="run the proxy under cProfile for the whole session (slows it)")
    parser.add_argument("--entry-points", action="store_true",
                        help="let the proxy load installed third-party plugins (off by default)")
    parser.add_argument("--repeat", type=int, default=1, choices=range(1, 11), metavar="1..10",
                        help="run the scenarios N times against the same proxy (watch RSS)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--peers", default="", metavar="LIST",
                        help="also measure other proxies in plain and https, each in a venv "
                             f"of its own (installed on first use): {', '.join(peers.PEERS)} "
                             "or all (default: none)")
    args = parser.parse_args()
    try:
        args.peer_list = peers.parse_peers(args.peers)
    except ValueError as exc:
        parser.error(str(exc))
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS) - set(EXTRA_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    return args


def main() -> int:
    args = parse_args()
    procs.install_sigterm_handler()
    tmp = Path(tempfile.mkdtemp(prefix="nectobench-"))
    bench: Bench | None = None
    try:
        with procs.Children() as children:
            bench = Bench(args, tmp, children)
            bench.meta.update(describe_machine(args))
            bench.start_origin()
            bench.start_proxy()
            bench.prepare_peers()
            for _ in range(args.repeat):
                for name in (*SCENARIOS, *EXTRA_SCENARIOS):
                    if name in args.scenarios.split(","):
                        bench.run(name)
            problems, stopping = bench.proxy_log_summary()
        meta = bench.meta
        builds = ", ".join(dict.fromkeys(meta.get("proxy_builds", [])))
        meta["loadavg_end"] = round(os.getloadavg()[0], 2)
        print(f"\n== results {meta['date']}: {meta['cpu']}, {meta['cores']} cores, "
              f"{'pinned (proxy core 0; origin + load core 1)' if args.pin else 'not pinned'}, "
              f"origin {meta['origin']}, Python {meta['python']} + {meta['loop']}, "
              f"NectoProxy {meta['nectoproxy']} (code {builds}); "
              f"1-min load average {meta['loadavg_start']} "
              f"at start, {meta['loadavg_end']} at end ==")
        print(report.rows_table(bench.rows))
        print()
        if args.repeat > 1:
            print(f"(each figure below: the repeat of {args.repeat} whose proxied run had the "
                  "least CPU taken from the proxy's core by other processes)")
        print(report.goals_table(bench.figures()))
        if bench.side:
            print(f"\n== side by side ({args.repeat} run(s) each: median [min-max]; "
                  f"{args.connections} keep-alive connections, GET /1k, {args.duration:g} s; "
                  "plain and https pinned as above, two-core unpinned) ==")
            print(report.side_table(bench.side))
            for note in bench.notes:
                print(f"  {note}")
        if problems:
            print(f"\nthe proxy logged {len(problems)} warning/error lines, first ones:")
            print("\n".join(f"  {line}" for line in problems[:10]))
        if stopping:
            print("\nwhen stopped with SIGTERM (idle scenario restarts), the proxy printed:")
            print("\n".join(f"  {line}" for line in sorted(set(stopping))[:5]))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"meta": meta, "rows": bench.rows, "figures": bench.figures(),
                 "peers": bench.notes,
                 "proxy_log_problems": problems, "proxy_shutdown_problems": stopping},
                indent=2))
        return 0
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
