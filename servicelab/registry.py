"""Seams found by entry points, as JupyterHub finds its spawners and authenticators.

A seam is a group of entry points (`servicelab.runtimes`, `servicelab.file_stores`,
`servicelab.authenticators`); an implementation is a name in that group, declared by the
package that provides it, servicelab's own included (see `pyproject.toml`). A fourth
runtime is a new package with an entry point in `servicelab.runtimes`: nothing of
servicelab is edited.

The loaded object is checked against the seam's contract (a base class), so that a
package that declares a name with something else fails at start-up with a message that
names the package, not later with an AttributeError.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

T = TypeVar("T")


class UnknownImplementation(LookupError):
    """No installed package declares this name in the group; `str()` lists those that do."""


@dataclass(frozen=True)
class Seam:
    """One group of entry points: its name, and what each of its objects must be."""

    group: str
    #: In words, for messages: "runtime", "file store", "authenticator".
    what: str
    #: The setting that chooses the implementation, for messages ("SERVICELAB_RUNTIME").
    setting: str

    def names(self) -> list[str]:
        return sorted({point.name for point in self._points()})

    def load(self, name: str, contract: type[T]) -> type[T]:
        """The class declared as `name`; it must be a subclass of `contract`."""
        found = [point for point in self._points() if point.name == name]
        if not found:
            known = ", ".join(self.names()) or "none"
            raise UnknownImplementation(
                f"{self.setting}={name!r}: no installed package provides a {self.what} of "
                f"that name (known: {known}). Install the package that provides it, or "
                "choose a known one."
            )
        point = found[0]
        loaded = point.load()
        if not (isinstance(loaded, type) and issubclass(loaded, contract)):
            raise TypeError(
                f"The {self.what} {name!r} ({point.value}, from "
                f"{_distribution(point)}) is not a {contract.__module__}.{contract.__name__}."
            )
        return loaded

    def _points(self) -> list[EntryPoint]:
        return list(entry_points(group=self.group))


def _distribution(point: EntryPoint) -> str:
    dist = point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


RUNTIMES = Seam("servicelab.runtimes", "runtime", "SERVICELAB_RUNTIME")
FILE_STORES = Seam("servicelab.file_stores", "file store", "SERVICELAB_FILE_STORE")
AUTHENTICATORS = Seam("servicelab.authenticators", "authenticator", "SERVICELAB_AUTHENTICATOR")
