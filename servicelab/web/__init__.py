"""The lab's web UI: Jinja2 pages and htmx fragments, served by the lab itself."""

from .routes import mount_web

__all__ = ["mount_web"]
