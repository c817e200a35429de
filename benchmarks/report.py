"""The tables a benchmark run prints: every measured row, then the issue's comparison table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Goal:
    """One line of issue 6's table (figures measured on a 2-core machine, proxy pinned)."""

    title: str
    unit: str
    higher_is_better: bool
    no_proxy: float | None
    mitmproxy: float
    proxy_py: float
    first_step: float
    aim: float


GOALS: dict[str, Goal] = {
    "plain": Goal("plain HTTP, keep-alive, req/s", "req/s", True, 32_000, 800, 7_900, 4_000,
                  8_000),
    "https": Goal("HTTPS intercepted, keep-alive, req/s", "req/s", True, 23_800, 580, 7_600,
                  3_500, 7_700),
    "https-newconn": Goal("HTTPS, new connection + handshake per request, req/s", "req/s", True,
                          890, 140, 220, 300, 450),
    "download-http": Goal("100 MiB download over HTTP, MB/s", "MB/s", True, 630, 335, 5, 400,
                          550),
    "download-https": Goal("100 MiB download over HTTPS, MB/s", "MB/s", True, 690, 130, 1, 250,
                           400),
    "download-growth": Goal("peak memory growth during that download, MiB", "MiB", False, None,
                            200, 250, 16, 8),
    "first-host": Goal("first request to a never-seen HTTPS host, median ms", "ms", False, 2.9,
                       12.7, 87, 6, 4),
    "idle": Goal("memory per idle client connection, KiB", "KiB", False, None, 35, 8, 12, 6),
    "startup": Goal("resident memory after start, MiB", "MiB", False, None, 72, 67, 45, 40),
}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000 or (value.is_integer() and abs(value) >= 100):
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def rows_table(rows: list[dict[str, Any]]) -> str:
    header = ["scenario", "run", "load", "req/s", "p50 ms", "p99 ms", "errors", "MB/s",
              "proxy peak RSS MiB", "proxy CPU s/1k req", "writer CPU s/1k req",
              "req per proxy CPU-s",
              "others on proxy core", "figure", "vs direct"]
    body = []
    for row in rows:
        body.append([
            row["scenario"], row["run"], row.get("generator", "-"), _fmt(row.get("rps")),
            _fmt(row.get("p50_ms"), 2), _fmt(row.get("p99_ms"), 2), _fmt(row.get("errors")),
            _fmt(row.get("mb_per_s")), _fmt(row.get("peak_rss_mib")),
            _fmt(row.get("cpu_s_per_1k"), 3), _fmt(row.get("writer_cpu_s_per_1k"), 3),
            _fmt(row.get("rps_per_cpu_s")),
            f"{row['others_on_proxy_core_pct']:.0f}%" if "others_on_proxy_core_pct" in row
            else "-",
            f"{_fmt(row.get('figure'))} {row.get('unit', '')}".strip(),
            row.get("ratio_text", "-"),
        ])
    return _table(header, body)


def goals_table(figures: dict[str, tuple[float | None, float | None]]) -> str:
    """``figures``: goal key -> (no-proxy figure, NectoProxy figure) measured in this run."""
    header = ["scenario", "no proxy (here)", "NectoProxy (here)", "first step", "aim",
              "mitmproxy 12.3", "proxy.py 2.4", "issue's no proxy", "first step met"]
    body = []
    for key, goal in GOALS.items():
        direct, proxied = figures.get(key, (None, None))
        met = "-"
        if proxied is not None:
            ok = proxied >= goal.first_step if goal.higher_is_better \
                else proxied <= goal.first_step
            met = "yes" if ok else "NO"
        body.append([goal.title, _fmt(direct), _fmt(proxied), _fmt(float(goal.first_step)),
                     _fmt(float(goal.aim)), _fmt(float(goal.mitmproxy)),
                     _fmt(float(goal.proxy_py)), _fmt(goal.no_proxy), met])
    return _table(header, body)


def ratio_text(direct: float | None, proxied: float | None, higher_is_better: bool) -> str:
    if not direct or proxied is None:
        return "-"
    ratio = proxied / direct
    return f"{ratio:.2f}x" if higher_is_better else f"{ratio:.2f}x the time"
