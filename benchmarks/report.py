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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _spread(values: list[float], digits: int = 1) -> str:
    """``median [min-max]`` (just the figure when there is one)."""
    if not values:
        return "-"
    if len(values) == 1:
        return _fmt(values[0], digits)
    return f"{_fmt(_median(values), digits)} [{_fmt(min(values), digits)}-" \
           f"{_fmt(max(values), digits)}]"


def side_table(rows: list[dict[str, Any]]) -> str:
    """The side-by-side rows (``--peers``, ``two-core``) of every repeat, one line per scenario
    and run: the median and range of each figure; "vs proxy.py" compares median req/s."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["run"]), []).append(row)

    def values(group: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
        return [float(r[key]) * scale for r in group if r.get(key) is not None]

    medians = {key: _median(values(group, "rps")) for key, group in groups.items()
               if values(group, "rps")}
    header = ["scenario", "run", "load", "runs", "req/s", "p50 ms", "p99 ms", "errors",
              "proxy CPU ms/1k req", "proxy peak RSS MiB", "others on proxy core",
              "load avg (1 min)", "vs direct", "vs proxy.py"]
    body = []
    for (scenario, run), group in groups.items():
        direct = medians.get((scenario, "direct"))
        reference = next((m for (s, r), m in medians.items()
                          if s == scenario and r.startswith("proxy.py")), None)
        mine = medians.get((scenario, run))
        others = values(group, "others_on_proxy_core_pct")
        body.append([
            scenario, run, group[0].get("generator", "-"), str(len(group)),
            _spread(values(group, "rps")), _spread(values(group, "p50_ms"), 2),
            _spread(values(group, "p99_ms"), 2), _fmt(int(sum(values(group, "errors")))),
            _spread(values(group, "cpu_s_per_1k", 1000.0), 0),
            _spread(values(group, "peak_rss_mib")),
            _spread(others, 0) + "%" if others else "-",
            ", ".join(_fmt(v, 1) for v in values(group, "loadavg")),
            "-" if run == "direct" or mine is None else ratio_text(direct, mine, True),
            "-" if run == "direct" or run.startswith("proxy.py") or mine is None
            else ratio_text(reference, mine, True),
        ])
    return _table(header, body)
