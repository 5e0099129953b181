"""`Record`: an API object with attribute access (`service.name`, `service.dockerImage`).

ML Lab's generated client returned model objects with attributes; a plain dict subclass
gives the same reading experience while staying JSON-serialisable and printable as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class Record(dict[str, Any]):
    """A JSON object whose keys are also attributes; nested objects are Records too."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r}; fields: {', '.join(self)}"
            ) from None

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.keys()]

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.items()}


def wrap(value: Any) -> Any:
    """Turn decoded JSON into Records (objects) and lists of Records, recursively."""
    if isinstance(value, dict):
        return Record({k: wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_datetime(value: Any) -> datetime | None:
    """A timestamp from a lab as an aware datetime, whichever form it came in: epoch
    milliseconds (an int, as servicelab and ML Lab send them) or an ISO 8601 string (as
    servicelab sent them before). None for a missing or unreadable value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        if value.lstrip("-").isdigit():
            return to_datetime(int(value))
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
