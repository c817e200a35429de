"""Issue 13's capture figures at scale: a million flows into the store, and the API over them.

    python benchmarks/capture_million.py [--flows 1000000] [--pin] [--tls]

Starts the benchmark origin and NectoProxy with its inspector capturing (store in a temporary
directory), sends ``--flows`` keep-alive requests for 1 KiB through it (bounded by
``--max-seconds``), and reports the proxy's resident memory before, at its peak and after,
the store's size on disk, and then the latency of ``GET /api/traffic`` with a filter (100
entries a page; p50/p95 over ``--queries`` calls, on the page the UI opens with and on pages
deep in the list). Goals: RSS growth <= 64 MiB after 1,000,000 flows; p95 <= 50 ms.
Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import procs
import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=float, default=1200.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--tls", action="store_true", help="HTTPS intercepted (slower)")
    parser.add_argument("--pin", action="store_true", help="proxy on core 0, load on core 1")
    parser.add_argument("--max-gib", type=float, default=0.0,
                        help="the store's size limit ([web] max_bytes; default: the default "
                             "2 GiB, which keeps about 400,000 such flows)")
    args = parser.parse_args()
    bench_args = argparse.Namespace(
        pin=args.pin, loadgen="python", cprofile=None, entry_points=False, capture="on",
        origin="auto", duration=args.max_seconds, warmup=0.0, profile=None,
        profile_scenarios="", connections=args.connections)
    with tempfile.TemporaryDirectory(prefix="nectoproxy-million-") as tmp, \
            procs.Children() as children:
        bench = run.Bench(bench_args, Path(tmp), children)
        if args.max_gib:
            bench.config_text = f"[web]\nmax_bytes = {int(args.max_gib * 1024**3)}\n"
        bench.start_origin()
        bench.start_proxy(record=False, capture=True)
        log = (Path(tmp) / "proxy.log").read_text()
        match = re.search(r"Inspector: http://127\.0\.0\.1:(\d+)/\?token=(\S+)", log)
        assert match, log
        api = httpx.Client(base_url=f"http://127.0.0.1:{match.group(1)}", trust_env=False,
                           timeout=60, headers={"Authorization": f"Bearer {match.group(2)}"})
        result = bench.loadgen("keepalive", True, args.tls, "--connections",
                               str(args.connections), "--duration", str(args.max_seconds),
                               "--max-requests", str(args.flows),
                               timeout=args.max_seconds + 300)
        served = result.get("requests", 0)
        print(f"served {served:,} requests at {result.get('rps')} req/s; RSS before "
              f"{result['rss_before_mib']} MiB, peak {result['peak_rss_mib']} MiB "
              f"(growth {result['growth_mib']} MiB)", flush=True)
        # Let the writer and the search index catch up (the count stops moving: retention may
        # have deleted flows, so it need not reach what was served), then the settled figure.
        deadline = time.monotonic() + 600
        stored, still = -1, 0
        while time.monotonic() < deadline and still < 3:
            stats = api.get("/api/status").json()
            sessions = api.get("/api/sessions").json()["sessions"]
            count = sum(s["flowCount"] for s in sessions)
            still = still + 1 if count == stored and not stats.get("queuedBytes") else 0
            stored = count
            time.sleep(2)
        time.sleep(5)
        settled = procs.rss_kib(bench.proxy.pid) / 1024
        store = Path(tmp) / "home" / "flows.db"
        size = sum(f.stat().st_size for f in store.parent.glob("flows.db*"))
        print(f"stored {stored:,} flows; store {size / 1024**2:,.0f} MiB on disk "
              f"({size / max(stored, 1):,.0f} bytes a flow); proxy RSS settled {settled:.1f} "
              f"MiB (growth {settled - result['rss_before_mib']:+.1f} MiB)", flush=True)
        for name, params in (
                ("first page, filtered", {"filter": "status:200 & method:GET", "limit": 100}),
                ("first page, host + path regex",
                 {"filter": "host:127.0.0.1 & url:\"/1k$\"", "limit": 100}),
                ("search", {"search": "1k", "limit": 100})):
            times = []
            cursor = None
            for n in range(args.queries):
                query = dict(params)
                if cursor is not None and n % 2:
                    query["cursor"] = cursor  # every other call a page further in
                started = time.perf_counter()
                response = api.get("/api/traffic", params=query)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                cursor = response.json().get("next")
            times.sort()
            p95 = times[int(len(times) * 0.95) - 1]
            print(f"GET /api/traffic {name}: p50 {statistics.median(times):.1f} ms, p95 "
                  f"{p95:.1f} ms over {len(times)} calls", flush=True)
        api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
