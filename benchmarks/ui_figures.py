"""The web UI's figures over a store of a million flows, in Debian's chromium.

    python benchmarks/ui_figures.py [--flows 1000000] [--scroll 100000] [--bodies 1,10,50,100]

Fills a store in a temporary directory through the store's own batched writer
(``CaptureWriter``; tiny flows, then the search index caught up, so that the proxy does no
indexing while it is measured), plus one flow with a JSON response body of each ``--bodies``
size in MiB (counted in ``--flows``, so retention keeps them all). Then starts ``nectoproxy``
on that store and drives ``/usr/bin/chromium`` (headless, through Playwright) to measure:

- time to the first row of the list: from navigation start (``performance.now()``'s origin)
  to the first frame after a real row (not a placeholder) is in the list; the first load
  (through ``/?token=``, the redirect included), then ``--loads`` reloads;
- the tab's JavaScript heap (CDP ``Runtime.getHeapUsage``, before and after a forced
  collection) after scrolling back through ``--scroll`` flows, a step of ``--step`` rows at a
  time, each step waiting until no placeholder row is left;
- for each large body: opening its flow's detail and pressing *load more* while it is
  offered (the UI shows at most 4 MiB of a body), with the longest main-thread task (a
  ``longtask`` PerformanceObserver) and the longest key press latency (a key pressed every
  100 ms meanwhile). A freeze is a task or a latency of 500 ms or more.

Every loop is bounded in count and in time (``--max-seconds`` for the whole run). Not a test:
CI does not run it; it prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import procs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nectoproxy.store import CaptureWriter, FlowRecord, SQLiteStore, new_flow_id

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MIB = 1024 * 1024
FREEZE_MS = 500.0
BANNER = re.compile(r"Inspector: (http://127\.0\.0\.1:(\d+)/\?token=\S+)")

#: Runs in every page before its own scripts (CDP injects it: the page's CSP does not apply).
PROBE = """(() => {
  window.__longtasks = [];
  window.__latencies = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longtasks.push(entry.duration);
  }).observe({ type: "longtask", buffered: true });
  document.addEventListener("keydown", (e) => {
    if (e.key === "x") window.__latencies.push(performance.now() - e.timeStamp);
  }, true);
  const watch = () => {
    if (document.querySelector("[data-testid=list-body] .row:not(.placeholder)")) {
      requestAnimationFrame(() => setTimeout(() => { window.__firstRow = performance.now(); }, 0));
    } else {
      requestAnimationFrame(watch);
    }
  };
  requestAnimationFrame(watch);
})();"""


def json_body(size: int) -> bytes:
    """A JSON array of objects, ``size`` bytes long."""
    item = b'{"id": 123456, "name": "item", "tags": ["alpha", "bravo"], "price": 12.5},\n'
    block = item * (64 * 1024 // len(item))
    inner = size - len(item)  # with the brackets and the last item, less its ',\n'
    body = block * (inner // len(block)) + b" " * (inner % len(block))
    return b"[" + body + item[:-2] + b"]"


def fill(path: Path, flows: int, bodies: list[int], deadline: float) -> tuple[int, int, float]:
    """The store: ``flows`` flows in one session, the last ones with the large bodies.
    Returns (session id, flows written, seconds)."""
    started = time.monotonic()
    with SQLiteStore(path) as store:
        session = store.start_run().id
    writer = CaptureWriter(path, max_body_size=max(bodies, default=1) * MIB + MIB)
    now = time.time() - flows / 100
    small = flows - len(bodies)
    written = 0
    try:
        for n in range(small):
            if n % 10_000 == 0 and time.monotonic() > deadline:
                break
            for _ in range(10_000):  # pause while the writer is behind (bounded)
                if writer.queued_messages < writer.max_queued_messages // 2:
                    break
                time.sleep(0.001)
            flow_id = new_flow_id()
            writer.flow_started(FlowRecord(
                id=flow_id, session_id=session, method="GET" if n % 10 else "POST",
                url=f"http://many.test/item/{n}", host="many.test", path=f"/item/{n}",
                started_at=now + n / 100))
            writer.flow_finished(flow_id, {
                "status": 200 if n % 10 else 404, "duration": 1.5,
                "content_type": "application/json", "response_size": 100 + n % 1000})
            written += 1
            if written % 100_000 == 0:
                print(f"  {written:,} flows queued, {time.monotonic() - started:.0f} s",
                      flush=True)
        for mib in bodies:
            flow_id = new_flow_id()
            body = json_body(mib * MIB)
            writer.flow_started(FlowRecord(
                id=flow_id, session_id=session, method="GET",
                url=f"http://bodies.test/body/{mib}MiB", host="bodies.test",
                path=f"/body/{mib}MiB", started_at=time.time()))
            for start in range(0, len(body), MIB):
                for _ in range(100_000):
                    if writer.queued_bytes < writer.max_queued_bytes // 2:
                        break
                    time.sleep(0.001)
                writer.body_chunk(flow_id, "response", body[start:start + MIB])
            writer.flow_finished(flow_id, {
                "status": 200, "duration": 5.0, "content_type": "application/json",
                "response_headers": [("Content-Type", "application/json"),
                                     ("Content-Length", str(len(body)))],
                "response_size": len(body)})
            written += 1
    finally:
        writer.close(timeout=600)
    with SQLiteStore(path) as store:
        indexed = store.index_pending(max_flows=flows + 10)
    print(f"  store filled: {written:,} flows, {indexed:,} indexed, "
          f"{time.monotonic() - started:.0f} s, {path.stat().st_size / MIB:,.0f} MiB", flush=True)
    return session, written, time.monotonic() - started


def first_row(context: Any, url: str, timeout_ms: float) -> float:
    page = context.new_page()
    try:
        page.goto(url)
        page.locator("[data-testid=list-body] .row:not(.placeholder)").first.wait_for(
            timeout=timeout_ms)
        for _ in range(100):  # the probe records it a frame later
            value = page.evaluate("window.__firstRow")
            if value is not None:
                return float(value)
            page.wait_for_timeout(20)
        raise RuntimeError("the first row was seen, but the probe did not record it")
    finally:
        page.close()


def heap(page: Any) -> tuple[float, float]:
    """The tab's JS heap in MiB: (used now, used after a forced collection)."""
    cdp = page.context.new_cdp_session(page)
    before = cdp.send("Runtime.getHeapUsage")["usedSize"] / MIB
    cdp.send("HeapProfiler.collectGarbage")
    after = cdp.send("Runtime.getHeapUsage")["usedSize"] / MIB
    cdp.detach()
    return before, after


def first_number(page: Any) -> int:
    return int(re.sub(r"\D", "", page.locator(
        "[data-testid=list-body] .row:not(.placeholder) .c-num").first.inner_text()))


def scroll_back(page: Any, flows: int, step_rows: int, deadline: float) -> dict[str, Any]:
    """Scroll up from the newest flow through ``flows`` flows; the heap and rows held then."""
    body = page.get_by_test_id("list-body")
    placeholders = page.locator("[data-testid=list-body] .row.placeholder")
    row_height = float(page.locator("[data-testid=list-body] .row").first.evaluate(
        "el => el.getBoundingClientRect().height"))
    start = first_number(page)
    started = time.monotonic()
    steps = waits_over = 0
    passed = 0
    while passed < flows and steps < 10_000 and time.monotonic() < deadline:
        body.evaluate(f"el => {{ el.scrollTop -= {step_rows * row_height}; }}")
        steps += 1
        try:
            placeholders.first.wait_for(state="detached", timeout=15_000)
        except Exception:  # noqa: BLE001 -- counted: a step whose rows did not come in 15 s
            waits_over += 1
        passed = start - first_number(page)
    seconds = time.monotonic() - started
    page.wait_for_timeout(1000)
    used, collected = heap(page)
    loaded = int(re.sub(r"\D", "", page.get_by_test_id("loaded").inner_text()))
    return {"passed": passed, "steps": steps, "seconds": seconds, "slow_steps": waits_over,
            "heap": used, "heap_gc": collected, "loaded": loaded}


def _keys_for(page: Any, seconds: float) -> None:
    for _ in range(int(seconds * 10)):
        page.keyboard.press("x")  # no shortcut: only the probe sees it
        page.wait_for_timeout(100)


def _worst(page: Any) -> tuple[float, float]:
    """The longest task and key latency since the last call (which resets them)."""
    tasks, keys = page.evaluate(
        "[window.__longtasks.splice(0), window.__latencies.splice(0)]")
    return max(tasks, default=0.0), max(keys, default=0.0)


def open_body(page: Any, mib: int, deadline: float) -> dict[str, Any]:
    """Open the flow with a ``mib`` MiB body (the first part shown), then load more while it
    is offered (bounded); the worst task and key latency of each phase."""
    page.keyboard.press("Escape")
    page.get_by_label("Filter").fill(f"host:bodies.test path:/body/{mib}MiB")
    page.get_by_label("Filter").press("Enter")
    row = page.locator("[data-testid=list-body] .row", has_text=f"/body/{mib}MiB")
    row.wait_for(timeout=30_000)
    page.get_by_test_id("shown").filter(has_text=re.compile(r"^1 in the list")).wait_for(
        timeout=30_000)
    _keys_for(page, 1)
    _worst(page)
    row.click()
    body = page.get_by_test_id("response-body")
    body.locator(".code, .json-tree").first.wait_for(timeout=60_000)
    _keys_for(page, 1)
    first = _worst(page)
    clicks = 0
    more = body.get_by_role("button", name=re.compile("Load more"))
    while clicks < 10 and time.monotonic() < deadline and more.all_inner_texts():
        label = more.all_inner_texts()[0]
        more.click()
        clicks += 1
        for _ in range(300):  # until the next part is in (the label changes), at most ~30 s
            page.keyboard.press("x")
            page.wait_for_timeout(100)
            texts = more.all_inner_texts()  # (does not wait for a button that went away)
            if not texts or texts[0] != label:
                break
    _keys_for(page, 1)
    more_worst = _worst(page) if clicks else (0.0, 0.0)
    tail = body.locator(".load-more, .muted", has_text=re.compile("the first"))
    note = tail.last.inner_text() if tail.count() else "shown whole"
    return {"mib": mib, "first": first, "more": more_worst, "clicks": clicks, "note": note}


def _fine_up_to(opened: list[dict[str, Any]], phases: tuple[str, ...]) -> str:
    """The largest size before the first that froze in one of ``phases``."""
    best = "none"
    for body in sorted(opened, key=lambda b: b["mib"]):
        if max(max(body[phase]) for phase in phases) >= FREEZE_MS:
            break
        best = f"{body['mib']} MiB"
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--scroll", type=int, default=100_000)
    parser.add_argument("--step", type=int, default=500, help="rows a scroll step")
    parser.add_argument("--bodies", default="1,10,50,100", help="MiB, comma-separated")
    parser.add_argument("--loads", type=int, default=3, help="reloads timed after the first")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--store", type=Path, help="reuse (or keep) the store at this path")
    args = parser.parse_args()
    from playwright import sync_api  # the [test] extra

    deadline = time.monotonic() + args.max_seconds
    bodies = [int(x) for x in args.bodies.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="nectoproxy-ui-") as tmp, \
            procs.Children() as children:
        home = Path(tmp) / "home"
        home.mkdir()
        store = args.store or home / "flows.db"
        if args.store and args.store.exists():
            with SQLiteStore(store) as opened:
                session, written = opened.active_session().id, opened.stats().total
            fill_seconds = 0.0
        else:
            session, written, fill_seconds = fill(store, args.flows, bodies, deadline)
        (home / "nectoproxy.toml").write_text(
            f'[web]\nstore = {json.dumps(str(store))}\nmax_flows = {max(written, 1)}\n'
            f"max_body_size = {(max(bodies, default=1) + 1) * MIB}\n")
        port = procs.free_port()
        log_path = Path(tmp) / "proxy.log"
        with open(log_path, "w") as log:
            proxy = children.start(
                [sys.executable, "-m", "nectoproxy", "--config", str(home / "nectoproxy.toml"),
                 "--no-entry-points", "-q", "--listen-host", "127.0.0.1", "--listen-port",
                 str(port), "--web-port", "0", "--session", str(session)],
                env={**os.environ, "NECTOPROXY_HOME": str(home)}, stdout=log,
                stderr=log)
        match = None
        for _ in range(600):
            match = BANNER.search(log_path.read_text())
            if match or proxy.poll() is not None:
                break
            time.sleep(0.1)
        if not match:
            print(log_path.read_text(), file=sys.stderr)
            return 1
        url = match.group(1)
        base = url.split("/?")[0] + "/"
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                 headless=True)
            context = browser.new_context(viewport={"width": 1440, "height": 860})
            context.add_init_script(PROBE)
            context.set_default_timeout(60_000)
            cold = first_row(context, url, 120_000)
            warm = [first_row(context, base, 120_000) for _ in range(args.loads)]
            page = context.new_page()
            page.goto(base)
            page.get_by_test_id("shown").filter(has_text=re.compile(r"[1-9]")).wait_for()
            page.locator("[data-testid=list-body] .row:not(.placeholder)").first.wait_for()
            shown = page.get_by_test_id("shown").inner_text()
            scrolled = scroll_back(page, args.scroll, args.step, deadline)
            opened = [open_body(page, mib, deadline) for mib in bodies
                      if time.monotonic() < deadline]
            browser.close()
        children.stop(proxy)

    print()
    print(f"UI figures: {written:,} flows in the store ({shown}), store filled in "
          f"{fill_seconds:.0f} s; chromium headless, {os.cpu_count()} cores")
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| first row of the list, first load (with the /?token= redirect) | {cold:,.0f} ms |")
    print(f"| first row of the list, reloads (median of {len(warm)}; max) | "
          f"{statistics.median(warm):,.0f} ms; {max(warm):,.0f} ms |")
    print(f"| JS heap after scrolling back {scrolled['passed']:,} flows ({scrolled['steps']} "
          f"steps of {args.step} rows, {scrolled['seconds']:.0f} s, {scrolled['slow_steps']} "
          f"steps over 15 s) | {scrolled['heap']:.1f} MiB, {scrolled['heap_gc']:.1f} MiB after "
          f"a collection; {scrolled['loaded']:,} rows held |")
    for body in opened:
        phases = [("opened", body["first"]), (f"{body['clicks']} x load more", body["more"])]
        worst = "; ".join(
            f"{name}: task {task:,.0f} ms, key {key:,.0f} ms"
            + (" (froze)" if max(task, key) >= FREEZE_MS else "")
            for name, (task, key) in phases[:2 if body["clicks"] else 1])
        print(f"| detail of a {body['mib']} MiB JSON body (then: {body['note']}) | {worst} |")
    print()
    print(f"largest body (every smaller one tried too) whose detail opens without a freeze: "
          f"{_fine_up_to(opened, ('first',))}; and through every load more: "
          f"{_fine_up_to(opened, ('first', 'more'))} (tried {args.bodies} MiB; a freeze: a task "
          f"or a key latency of {FREEZE_MS:.0f} ms or more)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
