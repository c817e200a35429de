"""Redact secrets in request and response bodies before they reach the other side.

Run it::

    nectoproxy -s examples/redact_secrets.py

What is replaced (by ``[REDACTED]``) in every text body (``text/*``, JSON, XML, forms, or
anything without a Content-Type that decodes as UTF-8), in both directions:

* the values of the request's ``Authorization``, ``Proxy-Authorization`` and ``Cookie``
  headers wherever a body repeats them (an echo endpoint, an error page, a debug dump), and
  ``Authorization: ...`` / ``Cookie: ...`` lines in text;
* ``"password": "..."`` fields in JSON and ``password=...`` in form data;
* credit-card-like numbers: 13 to 19 digits, optionally grouped by spaces or dashes, that pass
  the Luhn check.

The headers themselves are left alone by default (the origin needs them to authenticate you);
set ``redact_request_headers = true`` to replace them too. Options, in nectoproxy.toml::

    [plugins.redact_secrets]
    replacement = "[REDACTED]"
    headers = ["Authorization", "Proxy-Authorization", "Cookie"]
    json_fields = ["password"]
    cards = true
    redact_request_headers = false

The hooks are ``async``: large bodies are scanned in a worker thread (``anyio.to_thread``) so
that the regular expressions never hold up the other connections. Bodies too large to buffer
(``proxy.body_buffer_limit``) stream through unchanged, with a warning in the log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from nectoproxy import ConfigError, Flow, Headers, Request, Response

log = logging.getLogger("nectoproxy.examples.redact_secrets")

THREAD_THRESHOLD = 64 * 1024  # bodies longer than this are redacted in a worker thread
_TEXT_TYPES = ("text/", "json", "xml", "application/x-www-form-urlencoded", "javascript")
_CARD = re.compile(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.])")


@dataclass(frozen=True)
class Settings:
    replacement: str = "[REDACTED]"
    headers: tuple[str, ...] = ("Authorization", "Proxy-Authorization", "Cookie")
    json_fields: tuple[str, ...] = ("password",)
    cards: bool = True
    redact_request_headers: bool = False

    def patterns(self) -> list[re.Pattern[str]]:
        """Patterns whose group 1 is kept and whose group 2 is the secret."""
        headers = "|".join(re.escape(h) for h in self.headers)
        fields = "|".join(re.escape(f) for f in self.json_fields)
        out = []
        if headers:
            out.append(re.compile(rf"(?im)^([ \t]*(?:{headers})[ \t]*:[ \t]*)(\S[^\r\n]*)"))
        if fields:
            out.append(re.compile(rf'(?i)("(?:{fields})"\s*:\s*)("(?:[^"\\]|\\.)*")'))
            out.append(re.compile(rf"(?i)((?:^|[?&])(?:{fields})=)([^&\s]+)"))
        return out


settings = Settings()
_patterns = settings.patterns()


def on_configure(options: Mapping[str, Any]) -> None:
    global settings, _patterns
    defaults = Settings()
    values: dict[str, Any] = {}
    for key, value in options.items():
        if not hasattr(defaults, key):
            raise ConfigError(f"[plugins.redact_secrets] unknown key {key!r}")
        expected = type(getattr(defaults, key))
        if expected is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"[plugins.redact_secrets] {key}: expected a list of "
                                  f"strings, got {value!r}")
            value = tuple(value)
        elif not isinstance(value, expected):
            raise ConfigError(f"[plugins.redact_secrets] {key}: expected "
                              f"{'true or false' if expected is bool else 'a string'}, "
                              f"got {value!r}")
        values[key] = value
    settings = Settings(**values)
    _patterns = settings.patterns()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def secret_values(headers: Headers, names: Iterable[str]) -> list[str]:
    """The secrets in these header values: cookie values, credentials after an auth scheme
    ("Bearer abc" -> "abc"), or else the whole value. Short ones (under 6 characters) are
    left out: replacing every "1" or "dark" in a page would wreck it and protect nothing."""
    found: set[str] = set()
    for name in names:
        for value in headers.get_all(name):
            value = value.strip()
            if name.lower() == "cookie":
                found.update(pair.partition("=")[2].strip() for pair in value.split(";"))
                continue
            scheme, _, credentials = value.partition(" ")
            found.add(credentials.strip() if credentials and "=" not in scheme else value)
    # Longest first, so that a secret containing another one is replaced whole.
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str], settings: Settings,
           patterns: list[re.Pattern[str]]) -> str:
    """``text`` with every secret replaced (pure: safe to run in a worker thread)."""
    replacement = settings.replacement
    for secret in secrets:
        text = text.replace(secret, replacement)
    for pattern in patterns:
        text = pattern.sub(lambda m: m.group(1) + _replacement_for(m.group(2), replacement),
                           text)
    if settings.cards:
        text = _CARD.sub(lambda m: replacement if _is_card(m.group()) else m.group(), text)
    return text


def _replacement_for(secret: str, replacement: str) -> str:
    return f'"{replacement}"' if secret.startswith('"') else replacement


def _is_card(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _body_text(message: Request | Response) -> str | None:
    """The body as text if it is text worth scanning, else None."""
    content_type = message.headers.get("content-type", "").lower()
    if content_type and not any(t in content_type for t in _TEXT_TYPES):
        return None
    content = message.content
    if not content:
        return None
    if not content_type:
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return message.text


async def redact_body(message: Request | Response, secrets: list[str], where: str) -> None:
    if message.streamed:
        log.warning("%s: body too large to buffer, passed on without redaction", where)
        return
    try:
        text = _body_text(message)
    except ValueError as exc:  # an encoding this proxy cannot undo
        log.warning("%s: not redacted: %s", where, exc)
        return
    if text is None:
        return
    if len(text) > THREAD_THRESHOLD:
        redacted = await anyio.to_thread.run_sync(redact, text, secrets, settings, _patterns)
    else:
        redacted = redact(text, secrets, settings, _patterns)
    if redacted != text:
        message.text = redacted
        log.debug("%s: redacted", where)


async def on_request(flow: Flow) -> None:
    request = flow.request
    secrets = secret_values(request.headers, settings.headers)
    flow.metadata["redact_secrets.values"] = secrets
    await redact_body(request, secrets, f"request body of {request.method} {request.url}")
    if settings.redact_request_headers:
        for name in settings.headers:
            if name in request.headers:
                request.headers[name] = settings.replacement


async def on_response(flow: Flow) -> None:
    assert flow.response is not None
    secrets = flow.metadata.get("redact_secrets.values", [])
    await redact_body(flow.response, secrets, f"response body of {flow.request.url}")
