"""What every connection of one proxy shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from nectoproxy.certs import CertStore
from nectoproxy.config import Config
from nectoproxy.plugins import PluginHost
from nectoproxy.proxy.pool import Origins, UpstreamPool


class Stoppable(Protocol):
    def stop_idle(self) -> None:
        """The proxy is stopping: end now if waiting for a next request."""


@dataclass
class Services:
    """Configuration, plugins, the CA, and where origin connections come from."""

    config: Config
    hooks: PluginHost
    certs: CertStore
    origins: Origins
    #: The client sessions now open (the proxy tells them to stop when it stops).
    sessions: set[Stoppable] = field(default_factory=set)
    stopping: bool = False

    @property
    def pool(self) -> UpstreamPool:
        return self.origins.pool

    @property
    def loop_transports(self) -> bool:
        """Whether connections use :class:`~nectoproxy.proxy.transport.TransportStream`."""
        return self.origins.loop_transports
