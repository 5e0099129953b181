"""servicelab's example FastAPI service."""
