"""The embedded PYME-compatible data server (protocol §4): files, listings, ``.h5r`` aggregation."""
from cluster.dataserver.server import DataServer

__all__ = ["DataServer"]
