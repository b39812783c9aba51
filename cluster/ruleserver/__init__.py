"""The embedded rule server, wire-compatible with PYME's (``pyme-protocol.md`` §1)."""
from .server import RuleServer

__all__ = ["RuleServer"]
