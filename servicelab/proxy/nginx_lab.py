"""Wiring of the nginx data plane into a lab: its files, its routes, its start and stop."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from servicelab.config import Settings
from servicelab.proxy.app import ProxyApp
from servicelab.proxy.nginx_auth import NginxAuthApp
from servicelab.proxy.nginx_conf import NginxLayout, PlaneSettings
from servicelab.proxy.nginx_plane import NginxPlane, load_key
from servicelab.proxy.nginx_worker import worker_user
from servicelab.runtimes.base import Address


class _Route(Protocol):
    @property
    def addresses(self) -> Mapping[int, Address]: ...


class _RouteTable(Protocol):
    def values(self) -> Iterable[_Route]: ...


class RoutedServices(Protocol):
    """What the plane reads of the lab's `ServiceManager`: its route table. A protocol, so
    that the proxy does not import the service manager, which imports the proxy's rules."""

    @property
    def routes(self) -> _RouteTable: ...


def layout_for(settings: Settings) -> NginxLayout:
    root = Path(settings.data_dir).resolve() / "nginx"
    return NginxLayout(root, worker_user(settings.nginx_user))


def lab_socket(settings: Settings) -> Path:
    """Where the lab listens behind nginx."""
    return layout_for(settings).socket


def attach_nginx(
    app: Any, proxy: ProxyApp, settings: Settings, services: RoutedServices
) -> NginxAuthApp:
    """Start (or reload) nginx with the lab and keep its routes current; the returned
    app answers nginx's auth subrequests besides everything `proxy` serves."""
    layout = layout_for(settings)
    key = load_key(layout)

    def addresses() -> Iterator[Address]:
        for route in list(services.routes.values()):
            yield from route.addresses.values()

    plane = NginxPlane(
        PlaneSettings(
            host=settings.host,
            port=settings.port,
            key=key,
            read_timeout=settings.proxy_read_timeout,
            connect_timeout=settings.proxy_connect_timeout,
            trust_forwarded=settings.trust_proxy_headers,
            header_timeout=settings.header_timeout,
        ),
        layout,
        addresses,
    )
    lab = app.state.lab  # servicelab.lab.Lab, untyped here: the proxy does not import it
    lab.nginx = plane
    lab.on_startup.append(plane.start)
    lab.on_shutdown.append(plane.close)
    return NginxAuthApp(proxy, key)
