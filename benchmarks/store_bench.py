"""Flow store benchmark (issue 13): write N flows through a CaptureWriter, then time queries.

Not a test: it prints figures and asserts nothing. Bounded in count (``--flows``) and in time
(``--max-seconds``: writing stops early and the figures say how many flows were written).

    python benchmarks/store_bench.py --flows 100000
    python benchmarks/store_bench.py --flows 1000000 --max-seconds 3600 --path /tmp/store.db

Every flow has ~10 request and ~8 response headers and a ``--body``-byte JSON response body
(POSTs a small JSON request body too), over ``--hosts`` hosts. The producer runs in this
process's main thread, like the proxy's event loop; it pauses while the writer's queue is
more than half full, so what is measured is the writer, not the drop policy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nectoproxy.store import CaptureWriter, FlowRecord, SQLiteStore, new_flow_id
from nectoproxy.store.sorting import SORT_KEYS

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
         "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "user",
         "order", "item", "price", "total", "status", "account", "token", "session", "cart"]


_BODIES: dict[int, list[str]] = {}


def _body_pool(body_size: int, rng: random.Random) -> list[str]:
    """256 JSON bodies to vary (making a fresh one per flow would cost more than storing it)."""
    if body_size not in _BODIES:
        pool = []
        for _ in range(256):
            items: list[dict[str, object]] = []
            body = ""
            while len(body) < body_size + 64:
                items.append({rng.choice(WORDS): rng.randrange(10**6),
                              "label": f"{rng.choice(WORDS)}-{rng.randrange(1000)}"})
                body = json.dumps({"items": items})
            pool.append(body[1:])
        _BODIES[body_size] = pool
    return _BODIES[body_size]


def make_flow(i: int, hosts: int, body_size: int, rng: random.Random
              ) -> tuple[FlowRecord, bytes, bytes, dict[str, object]]:
    host = f"h{i % hosts}.test"
    method = "POST" if i % 10 == 0 else "OPTIONS" if i % 97 == 0 else "GET"
    word = WORDS[(i * 7) % len(WORDS)]
    path = f"/api/v1/{word}/{i}?page={i % 7}&q={WORDS[i % len(WORDS)]}"
    status = (200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200,
              201, 304, 404, 500)[(i * 13) % 20]
    ctype = "application/json" if i % 5 else "text/html; charset=utf-8"
    request_body = b'{"id": %d, "name": "%s"}' % (i, word.encode()) if method == "POST" else b""
    body = (f'{{"id": {i}, ' + _body_pool(body_size, rng)[i % 256])[:body_size].encode()
    record = FlowRecord(
        id=new_flow_id(), method=method, scheme="https", host=host, port=443, path=path,
        url=f"https://{host}{path}", http_version="HTTP/1.1", started_at=time.time(),
        client_addr="127.0.0.1:50000", server_addr=f"10.0.0.{i % 250}:443",
        request_headers=[("Host", host), ("User-Agent", "bench/1.0"), ("Accept", "*/*"),
                         ("Accept-Encoding", "gzip, br"), ("Accept-Language", "en"),
                         ("Cookie", f"sid={i * 7919}"), ("X-Request-Id", str(i)),
                         ("Connection", "keep-alive"), ("Cache-Control", "no-cache"),
                         ("Referer", f"https://{host}/")],
        tls_client={"sni": host, "version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256",
                    "alpn": "http/1.1"})
    finished: dict[str, object] = {
        "status": status, "reason": "OK", "content_type": ctype,
        "response_headers": [("Content-Type", ctype), ("Content-Length", str(len(body))),
                             ("Server", "bench"), ("Date", "Tue, 01 Dec 2026 21:27:00 GMT"),
                             ("Cache-Control", "private"), ("X-Trace", str(i)),
                             ("Vary", "Accept-Encoding"), ("Connection", "keep-alive")],
        "request_size": len(request_body), "response_size": len(body),
        "duration": 1 + (i % 300),
        "timings": {"connect": 1.0, "tls_handshake": 3.0, "request_sent": 3.5,
                    "first_byte": 20.0, "complete": 21.0},
    }
    return record, request_body, body, finished


def write(path: Path, args: argparse.Namespace) -> tuple[int, float]:
    rng = random.Random(13)
    writer = CaptureWriter(path)
    deadline = time.monotonic() + args.max_seconds
    start = time.perf_counter()
    written = 0
    for i in range(args.flows):
        if time.monotonic() > deadline:
            break
        record, request_body, body, finished = make_flow(i, args.hosts, args.body, rng)
        for _ in range(10_000):  # pause while the writer is behind (bounded)
            if writer.queued_messages < writer.max_queued_messages // 2 and \
                    writer.queued_bytes < writer.max_queued_bytes // 2:
                break
            time.sleep(0.001)
        writer.flow_started(record)
        if request_body:
            writer.body_chunk(record.id, "request", request_body)
        writer.body_chunk(record.id, "response", body)
        writer.flow_finished(record.id, finished)
        written += 1
        if written % 50_000 == 0:
            print(f"  {written} flows queued, {time.perf_counter() - start:.0f} s", flush=True)
    for _ in range(3_600_000):  # until every flow is written (not yet indexed), bounded
        if writer.queued_messages == 0:
            break
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    indexed_before = writer.stats.flows_indexed
    writer.flush(timeout=3600)
    index_elapsed = time.perf_counter() - start - elapsed
    writer.close()
    stats = writer.stats
    print(f"  the search index caught up {index_elapsed:.1f} s later "
          f"({stats.flows_indexed - indexed_before} flows left to index, "
          f"{stats.flows_indexed} indexed in all)")
    if stats.chunks_dropped or stats.messages_dropped or stats.messages_lost:
        print(f"  dropped: {stats}")
    return written, elapsed


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--body", type=int, default=1024, help="response body bytes")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--path", type=Path, help="store file (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="query an existing --path only")
    args = parser.parse_args()

    tmp = None
    if args.path is None:
        tmp = tempfile.TemporaryDirectory()
        args.path = Path(tmp.name) / "store.db"
    try:
        store = SQLiteStore(args.path)
        store.start_run() if not args.reuse else store.active_session()
        if not args.reuse:
            print(f"writing {args.flows} flows ({args.body}-byte bodies, {args.hosts} hosts)")
            written, elapsed = write(args.path, args)
            print(f"write: {written} flows in {elapsed:.1f} s = {written / elapsed:,.0f} flows/s")
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(os.path.getsize(p) for p in args.path.parent.glob(args.path.name + "*"))
        total = sum(s.flow_count for s in store.list_sessions())
        print(f"store: {total} flows, {size / 2**20:,.0f} MiB on disk "
              f"({size / max(total, 1):,.0f} bytes per flow), fts={store.fts}")
        session = store.active_session().id
        queries: dict[str, dict[str, Any]] = {
            "host:h17.test and status:2xx": {"filter": "host:h17.test and status:2xx"},
            "(no filter)": {},
            "status:404": {"filter": "status:404"},
            "method:OPTIONS": {"filter": "method:OPTIONS"},
            "type:html": {"filter": "type:html"},
            "type:html and not status:2xx (none)": {"filter": "type:html and not status:2xx"},
            "host:h3.test, 5 pages deep": {"filter": "host:h3.test", "pages": 5},
            "search 'x-request-id: 4242'": {"search": "x-request-id: 4242"},
            "search 'tango'": {"search": "tango"},
            "body:'\"id\": 4242,' (one flow)": {"filter": "body:'\"id\": 4242,'"},
            "body:quebec-7 (1 in 10 flows)": {"filter": "body:quebec-7"},
            "url:page=3 and host:h5.test": {"filter": "url:page=3 and host:h5.test"},
        }
        print(f"list_flows, 100 per page, {args.queries} runs each: p50 / p95 ms")
        for label, q in queries.items():
            pages = int(q.pop("pages", 1))

            def run(q: dict[str, Any] = q, pages: int = pages) -> None:
                cursor = None
                for _ in range(pages):
                    _, cursor = store.list_flows(session, limit=100, cursor=cursor,
                                                 **q)
                    if cursor is None:
                        break
            p50, p95 = timed(run, args.queries)
            print(f"  {label:36} {p50:8.1f} {p95:8.1f}")
        print(f"list_sorted, 100 per page, {args.queries} runs each: p50 / p95 ms")
        for sort in SORT_KEYS:
            middle = store.list_sorted(sort, session, limit=1000, order="oldest")[1]
            for label, q in {"first page": {}, "from a cursor": {"cursor": middle},
                             "status:404, from a cursor": {"cursor": middle,
                                                           "filter": "status:404"},
                             "at the middle (position)": {"position": total // 2}}.items():
                p50, p95 = timed(lambda q=q, sort=sort: store.list_sorted(  # type: ignore[misc]
                    sort, session, limit=100, **q), args.queries)
                print(f"  {sort + ', ' + label:36} {p50:8.1f} {p95:8.1f}")
        p50, p95 = timed(lambda: store.changes_since(store.current_marker() - 100), args.queries)
        print(f"  {'changes_since (last 100)':36} {p50:8.1f} {p95:8.1f}")
        p50, p95 = timed(lambda: store.stats(session), 3)
        print(f"  {'stats (3 runs)':36} {p50:8.1f} {p95:8.1f}")
        p50, p95 = timed(store.list_sessions, args.queries)
        print(f"  {'list_sessions':36} {p50:8.1f} {p95:8.1f}")
        store.close()
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
