"""Top functions of a proxy profile, by self and by cumulative time.

Reads py-spy's collapsed stacks (``run.py --profile DIR`` writes ``DIR/https-keepalive.txt``;
made with ``py-spy record --format raw --function``) or a cProfile file (``run.py --cprofile
FILE``)::

    python benchmarks/profile_summary.py /tmp/prof/https-keepalive.txt [--top 15]
    python benchmarks/profile_summary.py /tmp/proxy.prof
"""

from __future__ import annotations

import argparse
import pstats
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    where = match["where"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{match['name']} ({where.rsplit(':', 1)[0]})"


def collapsed(path: Path, top: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    packages: Counter[str] = Counter()
    for frame, n in own.items():
        where = frame.rpartition("(")[2].rstrip(")")
        packages[where.split("/", 1)[0] if "/" in where else where] += n
    lines = [f"{samples} samples", "\nSelf time by package (C calls count for their caller):"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in packages.most_common(10)]
    for title, counter in (("self", own), ("cumulative", total)):
        lines.append(f"\nTop {top} by {title} time:")
        for frame, n in counter.most_common(top):
            lines.append(f"  {100 * n / samples:5.1f}%  {frame}")
    return "\n".join(lines)


def cprofile(path: Path, top: int) -> str:
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        stats.sort_stats(key).print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with open(args.path, "rb") as file:
        text = file.read(64)
    is_text = all(32 <= b < 127 or b in (9, 10, 13) for b in text)
    print(collapsed(args.path, args.top) if is_text else cprofile(args.path, args.top))


if __name__ == "__main__":
    main()
