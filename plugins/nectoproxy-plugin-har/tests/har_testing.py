"""Helpers shared by the HAR plugin's tests: reading, waiting for and validating HAR files."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("har-1.2.schema.json")
README = Path(__file__).parent.parent / "README.md"


def load_har(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        document: dict[str, Any] = json.load(f)
    return document


def wait_for_entries(path: Path, count: int, timeout: float = 10.0) -> dict[str, Any]:
    """The HAR document once it holds ``count`` entries.

    The client has its answer a moment before ``on_complete`` writes the entry, hence the
    (bounded) wait. A read that overlaps the write of an entry may see it half-copied (the
    kernel does not make a multi-page write atomic for readers), so such a read is retried;
    the document returned was read whole, after the last expected entry was written.
    """
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 1):
        try:
            document = load_har(path)
        except json.JSONDecodeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        entries = document["log"]["entries"]
        if len(entries) >= count or time.monotonic() > deadline:
            assert len(entries) == count, f"expected {count} entries, found {len(entries)}"
            return document
        time.sleep(0.02)
    raise AssertionError("unreachable")


def validate_schema(document: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(document)


def check_chrome_import(document: dict[str, Any]) -> None:
    """What Chrome DevTools' HAR importer (HARFormat.ts / HARImporter.ts) insists on.

    Every nested record must be an object (its constructors throw otherwise); dates go through
    ``new Date()`` and must parse; numbers through ``Number()`` and must not be NaN; strings it
    reads unconditionally (``String(x)``) would become "undefined" when missing.
    """
    log = document["log"]
    assert isinstance(log, dict) and isinstance(log["entries"], list)
    assert isinstance(log["creator"], dict) and isinstance(log["creator"]["name"], str)
    assert isinstance(log.get("pages", []), list)
    for entry in log["entries"]:
        assert isinstance(entry, dict)
        _date(entry["startedDateTime"])
        _number(entry["time"])
        request, response, timings = entry["request"], entry["response"], entry["timings"]
        for record in (request, response, timings, response["content"]):
            assert isinstance(record, dict)
        for key in ("method", "url", "httpVersion"):
            assert isinstance(request[key], str)
        for key in ("headersSize", "bodySize"):
            _number(request[key])
            _number(response[key])
        for key in ("statusText", "httpVersion", "redirectURL"):
            assert isinstance(response[key], str)
        _number(response["status"])
        _number(response["content"]["size"])
        assert isinstance(response["content"]["mimeType"], str)
        if "text" in response["content"]:
            assert isinstance(response["content"]["text"], str)
        if "postData" in request:
            assert isinstance(request["postData"]["text"], str)  # String(undefined) otherwise
            assert isinstance(request["postData"]["mimeType"], str)
        for key in ("send", "wait", "receive"):
            _number(timings[key])
        for key in ("blocked", "dns", "connect", "ssl"):
            if key in timings:
                _number(timings[key])
        for cookie in request["cookies"] + response["cookies"]:
            assert isinstance(cookie, dict) and isinstance(cookie["name"], str)
            if cookie.get("expires"):
                _date(cookie["expires"])
        for pair in request["headers"] + response["headers"] + request["queryString"]:
            assert isinstance(pair, dict)
            assert isinstance(pair["name"], str) and isinstance(pair["value"], str)


def validate(document: dict[str, Any]) -> None:
    validate_schema(document)
    check_chrome_import(document)


def _date(text: Any) -> None:
    assert isinstance(text, str)
    assert datetime.fromisoformat(text).tzinfo is not None, text


def _number(value: Any) -> None:
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value


def entry_for(document: dict[str, Any], url_part: str) -> dict[str, Any]:
    matches = [e for e in document["log"]["entries"] if url_part in e["request"]["url"]]
    assert len(matches) == 1, f"{len(matches)} entries for {url_part!r}"
    return matches[0]


def header(record: dict[str, Any], name: str) -> str | None:
    return next((h["value"] for h in record["headers"] if h["name"].lower() == name.lower()),
                None)


def readme_toml_blocks() -> list[str]:
    """The ```toml blocks of the README, in order, exactly as written."""
    blocks, current = [], None
    for line in README.read_text(encoding="utf-8").splitlines():
        if current is None and line.strip() == "```toml":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return blocks
