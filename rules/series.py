"""A spooled series on the cluster as a data source: frame count and completeness by listing (§5.1)."""
from __future__ import annotations

import json
import logging
import threading
import time

from .dataserver_client import DataClient
from .errors import ProtocolError
from .metadata import MetaDataHandler
from .uris import make_cluster_uri, parse_cluster_uri

logger = logging.getLogger(__name__)


class ClusterSeries:
    """A ``<dir>/<stem>.pcs`` series: ``metadata.json``, ``frameNNNNN.pzf`` files, then ``events.json``.

    ``n_frames`` and ``is_complete`` re-list the series when the last listing is older than
    ``max_age`` seconds; once complete they are final. When ``events.json`` first appears the
    series is listed once more, so the final count never comes from a listing taken before the
    last frames arrived (PYME's data source can report a stale count, §8.16).
    """

    def __init__(self, uri: str, data_client: DataClient, *, max_age: float = 0.2):
        parsed = parse_cluster_uri(uri)
        self.path = parsed.path.rstrip("/")
        self.serverfilter = parsed.serverfilter or data_client.serverfilter
        self.uri = make_cluster_uri(self.path, self.serverfilter)
        self.data = data_client
        self.max_age = max_age
        self._lock = threading.Lock()
        self._n_frames = 0
        self._complete = False
        self._listed_at: float | None = None
        self._metadata: MetaDataHandler | None = None

    def refresh(self) -> int:
        """List the series now; return the frame count."""
        with self._lock:
            self._list()
            return self._n_frames

    @property
    def n_frames(self) -> int:
        """Number of ``*.pzf`` frames listed (final once :attr:`is_complete`)."""
        with self._lock:
            self._maybe_list()
            return self._n_frames

    @property
    def is_complete(self) -> bool:
        """True once ``events.json`` exists (the spooler writes it last)."""
        with self._lock:
            self._maybe_list()
            return self._complete

    def metadata(self) -> MetaDataHandler:
        """The series' ``metadata.json`` (read once)."""
        if self._metadata is None:
            self._metadata = MetaDataHandler.from_JSON(self.data.get_file(self.path + "/metadata.json"))
        return self._metadata.copy()

    def events(self) -> list:
        """``events.json`` as a list of ``[name, description, time]``; ``[]`` while absent."""
        try:
            raw = self.data.get_file(self.path + "/events.json")
        except FileNotFoundError:
            return []
        try:
            events = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError(f"{self.uri}/events.json is not JSON: {exc}") from exc
        if not isinstance(events, list):
            raise ProtocolError(f"{self.uri}/events.json is not a list")
        return events

    def frame_bytes(self, index: int) -> bytes:
        """The PZF bytes of frame ``index``."""
        return self.data.get_file(f"{self.path}/frame{int(index):05d}.pzf")

    # -- listing --------------------------------------------------------------------------
    def _maybe_list(self) -> None:
        if self._complete and self._listed_at is not None:
            return
        if self._listed_at is None or time.monotonic() - self._listed_at >= self.max_age:
            self._list()

    def _list(self) -> None:
        count, complete = self._count()
        if complete and not self._complete:
            # Frames may have landed (on other servers) after that listing was taken.
            count = max(count, self._count()[0])
            logger.info("series %s complete with %d frames", self.uri, count)
        self._n_frames = max(self._n_frames, count)
        self._complete = self._complete or complete
        self._listed_at = time.monotonic()

    def _count(self) -> tuple[int, bool]:
        listing = self.data.listdirectory(self.path, fresh=True)
        count = sum(1 for name in listing if name.endswith(".pzf"))
        return count, "events.json" in listing

    def __repr__(self) -> str:
        return f"ClusterSeries({self.uri!r})"
