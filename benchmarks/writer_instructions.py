"""Instructions the capture writer's child executes per flow, counted by valgrind.

    python benchmarks/writer_instructions.py [--flows 2000] [--batch 500]

Timing the writer on a shared machine moves by half from one minute to the next; an
instruction count does not (it is the same on every run of the same code, to a few tenths
of a percent), so it is what to compare two versions of the writer by. The work counted is the
child's per batch, as ``store.process`` does it: ``marshal.loads`` of what the proxy sent
(heads, 1 KiB text bodies, ends of keep-alive HTTPS flows, 16 header fields), the mapping to
messages, ``Batches.write`` in a transaction, and indexing the search text. The script runs
itself under ``valgrind --tool=callgrind`` twice, without batches and with them, and prints
the difference per flow. Needs valgrind (apt: valgrind); runs about a minute.
"""

from __future__ import annotations

import argparse
import marshal
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while",
         "function", "return", "const", "let", "if", "else", "for", "of", "in", "await",
         "async", "import", "export", "default", "class", "extends")
REQUEST = [("Host", "www.example.test"),
           ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
           ("Accept", "*/*"), ("Accept-Language", "en-US,en;q=0.5"),
           ("Accept-Encoding", "gzip, deflate, br"), ("Referer", "https://www.example.test/"),
           ("Connection", "keep-alive"), ("Cookie", "session=0123456789abcdef; theme=dark")]
RESPONSE = [("Server", "nginx"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("Content-Type", "application/javascript"), ("Content-Length", "1024"),
            ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Connection", "keep-alive"),
            ("ETag", '"65920080-400"'), ("Accept-Ranges", "bytes")]


def _batch(rng: random.Random, first: int, count: int) -> bytes:
    """What the proxy's sender hands the child for ``count`` flows (``store.process._dumps``)."""
    messages: list[tuple[Any, ...]] = []
    for n in range(first, first + count):
        flow_id = f"{rng.getrandbits(128):032x}"
        start = 1_700_000_000.0 + n / 1000
        url = f"https://www.example.test/static/app-{n}.js"
        head = (flow_id, "regular", "127.0.0.1:50000", "https", "GET", url, "www.example.test",
                443, f"/static/app-{n}.js", "HTTP/1.1", REQUEST, start,
                ("www.example.test", "TLSv1.3", "TLS_AES_256_GCM_SHA384", "http/1.1"), None)
        body = " ".join(rng.choice(WORDS) for _ in range(220)).encode()[:1024]
        times = (None, None, start + 0.0001, start + 0.0004, start + 0.0005)
        server_tls = ("www.example.test", "TLSv1.3", "TLS_AES_256_GCM_SHA384", "http/1.1",
                      "CN=www.example.test", "CN=Test CA", 1_900_000_000)
        end: tuple[Any, ...] = (
            start, times, "127.0.0.1:443", server_tls, None, [], False, None, None, "", 0,
            (200, "OK", RESPONSE, RESPONSE, len(body)), (False, False, -1, -1), (None, None))
        messages += [("h", head), ("c", flow_id, "response", body),
                     ("e", flow_id, end, (False, False))]
    return marshal.dumps(messages)


def work(flows: int, batch_size: int, write: bool) -> None:
    """The counted part (run under valgrind): the child's work for ``flows`` flows, or with
    ``write`` False everything but it (imports, the store, making the batches), which is
    subtracted."""
    from nectoproxy.store import batch, ingest, process, schema, textindex
    from nectoproxy.store.process import _Pipe

    rng = random.Random(13)
    folder = Path(tempfile.mkdtemp(prefix="writer-instructions-"))
    conn = schema.open_store(folder / "flows.db", busy_timeout=5,
                             cache_kib=schema.WRITER_CACHE_KIB)
    conn.execute("BEGIN IMMEDIATE")
    ingest.ensure_active_session(conn)
    conn.execute("COMMIT")
    batches = batch.Batches(10 * 1024**2)
    pipe = _Pipe.__new__(_Pipe)  # only its message mapping is used
    tune = getattr(process, "tune_collector", None)  # (older code, to compare: none)
    if tune is not None:
        tune()
    for first in range(0, flows, batch_size):
        data = _batch(rng, first, min(batch_size, flows - first))
        if not write:
            continue
        messages = list(map(pipe._message, marshal.loads(data)))
        conn.execute("BEGIN IMMEDIATE")
        batches.write(conn, messages)
        conn.execute("COMMIT")
        batches.committed()
        conn.execute("BEGIN IMMEDIATE")
        textindex.index_pending(conn, 1024, textindex.INDEX_BODY_BYTES, batches.take_text)
        conn.execute("COMMIT")
    conn.close()
    shutil.rmtree(folder, ignore_errors=True)


def _count(flows: int, batch_size: int, generate_only: bool) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, __file__, "--inside", "--flows", str(flows),
               "--batch", str(batch_size)] + (["--generate-only"] if generate_only else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind failed ({done.returncode}): {done.stderr[-800:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="flows per batch")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.flows <= 100_000 or args.batch < 1:
        parser.error("--flows 1..100000, --batch >= 1")
    if args.inside:
        work(args.flows, args.batch, write=not args.generate_only)
        return
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (apt install valgrind)")
    base = _count(args.flows, args.batch, True)
    total = _count(args.flows, args.batch, False)
    print(f"capture writer: {(total - base) / args.flows:,.0f} instructions per flow "
          f"({args.flows} flows in batches of {args.batch}; valgrind callgrind)")


if __name__ == "__main__":
    main()
