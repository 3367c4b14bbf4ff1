"""gateway: an async API gateway on Tornado."""

__version__ = "0.1.0"
