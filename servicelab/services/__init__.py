"""Services: from a ServiceSpec to a running, watched, reachable service.

The parts, each in a module of its own:

- `store`: the rows (what should run, and the handle of what runs), as typed snapshots;
- `routes`: the in-memory route table the proxy reads;
- `health`: the HTTP prober for services without a health check of their own;
- `reconcile`: the loop that restarts what failed, with back-off, one service at a time;
- `adopt`: after a restart of the lab, exactly one instance per service;
- `rollout`: an update without downtime (the new instance beside the old one);
- `manager`: `ServiceManager`, the commands the API, CLI and UI give;
- `commands`: the queue through which a process that does not lead has the leader run
  a command, typed in `command_types`, run by `dispatch`, its domain error carried back
  by `error_codec`.
"""

from servicelab.errors import LabError as ServiceError

from .manager import ServiceManager
from .routes import Route, RouteTable, service_path, service_url_env
from .store import ServiceRow

__all__ = [
    "Route",
    "RouteTable",
    "ServiceError",
    "ServiceManager",
    "ServiceRow",
    "service_path",
    "service_url_env",
]
