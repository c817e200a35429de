"""The header that ties a replayed request to the flow it replays.

The inspector replays a flow by sending it through the proxy itself, so plugins, upstream
verification and capture treat it like any other request. It adds ``X-NectoProxy-Replay:
<original id>;<new id>;<mac>``, where the MAC is an HMAC of both ids under the inspector's
token. Capture removes the header (from what it stores and from what it forwards), and when the
MAC is right records the flow under the new id, linked to the original, so the API can answer
with the flow the replay made. A client that forges the header gets it removed, nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import re

HEADER = "X-NectoProxy-Replay"
_ID = re.compile(r"[0-9a-f]{32}")


def _mac(token: str, original: str, new: str) -> str:
    message = f"{original};{new}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()[:32]


def make(token: str, original: str, new: str) -> str:
    """The header value for a replay of ``original`` recorded as ``new`` (``original`` empty
    for a request composed from scratch)."""
    return f"{original};{new};{_mac(token, original, new)}"


def parse(token: str, value: str) -> tuple[str, str] | None:
    """(original id or "", new id) if ``value`` was made with ``token``, else None."""
    parts = value.strip().split(";")
    if len(parts) != 3 or not token:
        return None
    original, new, mac = parts
    if not ((not original or _ID.fullmatch(original)) and _ID.fullmatch(new)):
        return None
    if not hmac.compare_digest(mac, _mac(token, original, new)):
        return None
    return original, new
