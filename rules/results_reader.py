"""Incremental reading of a results table on the cluster (``GET <file>.h5r/<Table>.npy?from=&to=``).

:class:`IncrementalTable` remembers how many rows it has read and asks the data server only for the
rows after them, in bounded chunks, so a growing ``.h5r`` is never read whole twice. A file or table
that does not exist yet (a localisation rule that has found nothing so far) reads as no new rows.
"""
from __future__ import annotations

import logging

import numpy as np

from .dataserver_client import DataClient
from .metadata import MetaDataHandler
from .uris import cluster_path

logger = logging.getLogger(__name__)

#: Rows asked for per request (≈ 11 MB of ``LatGaussFitFR`` records).
CHUNK_ROWS = 100_000


class IncrementalTable:
    """Rows of ``table`` in results file ``path`` (bare path or ``PYME-CLUSTER://`` URI), read
    from where the last read stopped."""

    def __init__(self, data: DataClient, path: str, table: str = "FitResults", *,
                 chunk_rows: int = CHUNK_ROWS):
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self.data = data
        self.path = cluster_path(path).strip("/")
        self.table = table
        self.chunk_rows = int(chunk_rows)
        self.rows_read = 0

    def read_new(self, max_rows: int | None = None) -> np.ndarray | None:
        """The rows added since the last call (at most ``max_rows``), or None when there are none
        (also while the file or table does not exist). Raises the engine's errors
        (:class:`~rules.errors.ClusterError`) when the server cannot be read."""
        parts: list[np.ndarray] = []
        wanted = max_rows
        while wanted is None or wanted > 0:
            ask = self.chunk_rows if wanted is None else min(self.chunk_rows, wanted)
            try:
                rows = self.data.read_table(self.path, self.table, self.rows_read,
                                            self.rows_read + ask)
            except FileNotFoundError:
                break
            if len(rows):
                parts.append(rows)
                self.rows_read += len(rows)
                if wanted is not None:
                    wanted -= len(rows)
            if len(rows) < ask:
                break
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def metadata(self) -> MetaDataHandler:
        """The results file's ``/MetaData`` (``GET <file>.h5r/MetaData``)."""
        return MetaDataHandler.from_JSON(self.data.get_file(f"{self.path}/MetaData"))
