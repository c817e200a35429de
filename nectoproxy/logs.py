"""Console logging for the command line (the library itself only logs to named loggers)."""

from __future__ import annotations

import logging
import sys

from nectoproxy.config import Config


def setup_logging(config: Config) -> None:
    level = getattr(logging, config.log.level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("nectoproxy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("nectoproxy.flows").setLevel(logging.INFO)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.name == "nectoproxy.flows":
            return message
        return f"[{record.levelname.lower()}] {message}"
