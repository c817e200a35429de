"""How long minting a leaf certificate takes, so we know what a first CONNECT to a host costs.

Prints the median of 200 ``issue_leaf`` calls (one RSA-2048 signature over a P-256 leaf) and of
200 first ``CertStore.server_context`` calls for new hosts (mint + atomic disk write + building
the ssl.SSLContext). Run from the repository root:

    python -m benchmarks.bench_mint
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import anyio

from nectoproxy.certs import CertStore, create_ca, generate_leaf_key, issue_leaf

ITERATIONS = 200


def bench_issue_leaf() -> list[float]:
    ca_cert, ca_key = create_ca()
    leaf_key = generate_leaf_key()
    timings = []
    for i in range(ITERATIONS):
        started = time.perf_counter()
        issue_leaf(f"host{i}.bench.test", ca_cert=ca_cert, ca_key=ca_key, leaf_key=leaf_key)
        timings.append(time.perf_counter() - started)
    return timings


async def bench_server_context(directory: Path) -> tuple[list[float], list[float]]:
    store = CertStore(directory)
    store.load_or_create()
    first, cached = [], []
    for i in range(ITERATIONS):
        host = f"site{i}.bench.test"
        started = time.perf_counter()
        await store.server_context(host)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        await store.server_context(host)
        cached.append(time.perf_counter() - started)
    return first, cached


def _ms(timings: list[float]) -> str:
    return f"{statistics.median(timings) * 1000:.3f} ms"


def main() -> None:
    leaf = bench_issue_leaf()
    with tempfile.TemporaryDirectory() as directory:
        first, cached = anyio.run(bench_server_context, Path(directory))
    print(f"issue_leaf (RSA-2048 CA signs a P-256 leaf), median of {ITERATIONS}: {_ms(leaf)}")
    print(f"server_context, first call for a new host, median of {ITERATIONS}: {_ms(first)}")
    print(f"server_context, memory-cache hit, median of {ITERATIONS}: {_ms(cached)}")


if __name__ == "__main__":
    main()
