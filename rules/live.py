"""Following a localisation analysis while it runs: new localisations, statistics and progress.

:class:`LiveLocalisations` is polled (every half second, off any GUI thread): each
:meth:`~LiveLocalisations.poll` reads only the rows added to the results file since the last one,
adds them to the running :class:`~rules.locstats.LocalisationStats`, and measures analysis against
acquisition (frames spooled from the series listing, frames analysed from the rule's counters).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .dataserver_client import DataClient
from .localisations import PhotonConversion, localisation_columns
from .locstats import LocalisationStats, Progress, ProgressTracker
from .metadata import MetaDataHandler
from .results_reader import IncrementalTable
from .series import ClusterSeries

logger = logging.getLogger(__name__)

#: Rows read per poll at most, so one poll of a large finished file stays short.
MAX_ROWS_PER_POLL = 500_000


@dataclass
class LiveUpdate:
    """What one poll found: the new localisations (readable columns, or None) and progress."""

    columns: dict[str, np.ndarray] | None
    progress: Progress | None
    rows_read: int
    more: bool


class LiveLocalisations:
    """Localisations of ``results`` (an ``.h5r`` path or URI) as they arrive, with statistics.

    ``series`` (a URI) is the series being analysed, for frames spooled; omit it for a finished
    results file.
    """

    def __init__(self, data: DataClient, results: str, series: str | None = None, *,
                 max_rows: int = MAX_ROWS_PER_POLL):
        self.reader = IncrementalTable(data, results)
        self.series = ClusterSeries(series, data) if series else None
        self.stats = LocalisationStats()
        self.max_rows = max_rows
        self._conversion: PhotonConversion | None = None
        self._tracker = ProgressTracker()

    @property
    def conversion(self) -> PhotonConversion:
        """Pixel size and camera gain: the results file's metadata over the series'."""
        if self._conversion is None:
            md = MetaDataHandler()
            for source in (self.series.metadata if self.series is not None else None,
                           self.reader.metadata):
                if source is None:
                    continue
                try:
                    md.update(source())
                except (FileNotFoundError, ValueError) as exc:
                    logger.info("no metadata for %s yet: %s", self.reader.path, exc)
            self._conversion = PhotonConversion.from_metadata(md)
        return self._conversion

    def poll(self, frames_analysed: int | None = None) -> LiveUpdate:
        """Read what is new. ``frames_analysed`` (the rule's completed tasks) gives the lag;
        without it only localisations and statistics are updated."""
        rows = self.reader.read_new(self.max_rows)
        columns = None
        if rows is not None:
            columns = localisation_columns(rows, self.conversion)
            self.stats.add(columns)
        progress = None
        if self.series is not None and frames_analysed is not None:
            spooled = self.series.n_frames
            progress = self._tracker.update(time.monotonic(), spooled, frames_analysed,
                                            self.series.is_complete)
        more = rows is not None and len(rows) >= self.max_rows
        return LiveUpdate(columns, progress, self.reader.rows_read, more)
