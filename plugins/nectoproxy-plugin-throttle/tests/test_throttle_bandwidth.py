"""Measured bandwidth through a real proxy: bodies are paced as they stream, byte-exact.

These are the two tests the issue asks to measure: wall-clock bounds with a tolerance.
"""

from __future__ import annotations

import hashlib
import time

from nectoproxy_plugin_throttle import Throttle

from nectoproxy.testing.origin import pattern_bytes, pattern_sha256

MiB = 1024 * 1024


def test_one_mib_download_at_slow_3g_takes_about_ten_seconds(make_proxy, origin):
    # Slow 3G: 97 KiB/s down, so 1 MiB is 10.56 s of pacing, plus 400 ± 100 ms latency.
    config = {"plugins": {"throttle": {"profile": "Slow 3G", "seed": 3}}}
    digest, received, arrivals = hashlib.sha256(), 0, []
    with make_proxy(plugins=[Throttle()], config=config) as proxy, proxy.client() as client:
        started = time.monotonic()
        with client.stream("GET", f"{origin.url}/bytes/{MiB}") as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                digest.update(chunk)
                received += len(chunk)
                arrivals.append((time.monotonic() - started, received))
        elapsed = time.monotonic() - started
    assert received == MiB
    assert digest.hexdigest() == pattern_sha256(MiB)
    assert 9.0 <= elapsed <= 13.0, f"1 MiB at 97 KiB/s took {elapsed:.2f} s"
    # Streamed, not one sleep then one burst: the bytes arrive over the whole duration.
    halfway = max((n for t, n in arrivals if t <= elapsed / 2), default=0)
    assert 0.1 * MiB <= halfway <= 0.9 * MiB, arrivals
    assert arrivals[0][0] < elapsed / 2, arrivals


def test_upload_is_paced_at_the_profile_rate(make_proxy, tls_origin):
    # A faster custom rate keeps the suite short: 256 KiB at 64 KiB/s is about 4 s.
    options = {"profile": "uplink", "profiles": {"uplink": {"upload_bps": 64 * 1024}}}
    body = pattern_bytes(256 * 1024, seed=5)
    with make_proxy(plugins=[Throttle()], config={"plugins": {"throttle": options}}) as proxy, \
            proxy.client() as client:
        started = time.monotonic()
        response = client.post(tls_origin.url + "/upload", content=body)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    assert 3.2 <= elapsed <= 6.5, f"256 KiB at 64 KiB/s took {elapsed:.2f} s"
    assert tls_origin.requests[-1].body_sha256 == hashlib.sha256(body).hexdigest()
