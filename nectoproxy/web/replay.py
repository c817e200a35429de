"""Replay: send a request again *through the running proxy*.

Going through the proxy (not straight to the origin) means plugins, rules, upstream
verification and capture treat a replay like any other request. The request carries
``X-NectoProxy-Replay`` (see :mod:`nectoproxy.replaytag`), which the capture plugin removes,
recording the flow under the id chosen here and linked to the original, so the API can wait
for that flow and answer with it.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from nectoproxy import replaytag
from nectoproxy.store import new_flow_id
from nectoproxy.web.messages import Outgoing, framed_headers

log = logging.getLogger("nectoproxy.web")

#: Longest a replay may take, connecting to the proxy to the last response byte.
TIMEOUT = 60.0


@dataclass(frozen=True)
class ReplayResult:
    """The new flow's id, the status the proxy answered (None if there was no answer) and
    what went wrong (None if nothing did)."""

    id: str
    status: int | None = None
    error: str | None = None


class Replayer:
    """Sends requests through the proxy at ``proxy_url`` (credentials in its userinfo),
    trusting the proxy's CA at ``ca_path``; ``token`` signs the replay header."""

    def __init__(self, proxy_url: str, ca_path: Path, token: str, *,
                 timeout: float = TIMEOUT) -> None:
        self.proxy_url = proxy_url
        self.ca_path = Path(ca_path)
        self.token = token
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None

    async def _context(self) -> ssl.SSLContext:
        if self._ssl is None:  # reading the CA file is disk I/O: not on the loop
            self._ssl = await anyio.to_thread.run_sync(
                lambda: ssl.create_default_context(cafile=str(self.ca_path)))
        return self._ssl

    async def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes,
                   replay_of: str | None) -> ReplayResult:
        """Send the request with exactly ``headers`` (connection-specific fields and framing
        made to fit ``body``; none of httpx's defaults) and read the whole answer."""
        new_id = new_flow_id()
        request = Outgoing(method, url, list(headers), body)
        fields = framed_headers(request)
        fields.append((replaytag.HEADER, replaytag.make(self.token, replay_of or "", new_id)))
        try:
            verify = await self._context()
        except (OSError, ssl.SSLError) as exc:
            return ReplayResult(new_id, error=f"cannot load the proxy's CA {self.ca_path}: {exc}")
        try:
            with anyio.fail_after(self.timeout):
                async with httpx.AsyncClient(proxy=self.proxy_url, verify=verify,
                                             trust_env=False, follow_redirects=False,
                                             timeout=self.timeout) as client:
                    outgoing = client.build_request(method, url, content=body)
                    # Exactly the recorded fields: httpx's defaults (Accept, Accept-Encoding,
                    # Connection, User-Agent) go unless the recording had them.
                    outgoing.headers = httpx.Headers(fields)
                    response = await client.send(outgoing, stream=True)
                    try:
                        async for _ in response.aiter_raw():
                            pass  # the proxy captures the body; the API reads it from there
                    finally:
                        await response.aclose()
        except TimeoutError:
            return ReplayResult(new_id, error=f"the replay took longer than {self.timeout:g} s")
        except httpx.HTTPError as exc:
            log.debug("replay %s %s failed: %r", method, url, exc)
            return ReplayResult(new_id, error=f"{type(exc).__name__}: {exc}" if str(exc)
                                else type(exc).__name__)
        return ReplayResult(new_id, status=response.status_code)
