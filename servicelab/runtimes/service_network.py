"""The services' network as the settings describe it, read by the local and Docker runtimes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from servicelab.runtimes.base import RuntimeUnavailable
from servicelab.runtimes.sandbox_net import ServiceNetwork

if TYPE_CHECKING:
    from servicelab.config import Settings


def service_network(settings: Settings) -> ServiceNetwork:
    """SERVICELAB_SERVICE_NETWORK and SERVICELAB_SERVICE_EGRESS; a bad value stops the
    lab at start, with the message naming the setting to fix."""
    try:
        return ServiceNetwork.parse(settings.service_network, settings.service_egress)
    except ValueError as exc:
        raise RuntimeUnavailable(str(exc)) from None
