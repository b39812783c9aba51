"""Localisation rules: one task per frame of a series on the cluster or of a live spooler (§3.3)."""
from __future__ import annotations

import logging
import posixpath
from typing import Any

import numpy as np

from .metadata import MetaDataHandler, fix_em_gain
from .rule import NoNewTasks, Rule
from .series import ClusterSeries
from .spooler import spooler_events, spooler_metadata
from .templates import localisation_template, render_template
from .uris import (
    check_name,
    cluster_path,
    is_cluster_uri,
    make_cluster_uri,
    parse_cluster_uri,
    results_filename_for,
)

logger = logging.getLogger(__name__)

#: Tasks released per pass of the release loop (PYME: 100000).
RELEASE_BATCH = 100000

#: ``/Events`` table layout of ``.h5r`` files (§5.5; field order as PYME's data server writes it).
EVENTS_DTYPE = np.dtype([("EventName", "S32"), ("EventDescr", "S256"), ("Time", "<f8")])


def verify_cluster_results_filename(resultsFilename: str, cluster=None) -> str:
    """Return an unused version of a results file name: ``name.h5r``, else ``name_1.h5r``, ``_2``, ...

    A name counts as used when the file or its ``.json`` metadata companion exists on the cluster.
    The answer has the form of the input (URI stays URI, bare path stays bare).
    """
    if cluster is None:
        from .connection import default_cluster
        cluster = default_cluster()
    data = cluster.data
    parsed = parse_cluster_uri(resultsFilename)
    bare = check_name(parsed.path)

    def taken(path: str) -> bool:
        return data.exists(path) or data.exists(path + ".json")

    candidate = bare
    if taken(candidate):
        stem = posixpath.splitext(bare)[0]
        n = 1
        while taken(f"{stem}_{n}.h5r"):
            n += 1
        candidate = f"{stem}_{n}.h5r"
        logger.info("results file %s exists; using %s", bare, candidate)
    if is_cluster_uri(resultsFilename):
        return make_cluster_uri(candidate, parsed.serverfilter)
    return candidate


def events_array(events) -> np.ndarray:
    """``[[name, description, time], ...]`` → a structured array of :data:`EVENTS_DTYPE`."""
    rows = []
    for event in events:
        name, descr, when = event[0], event[1], event[2]
        rows.append((str(name).encode("utf-8")[:32], str(descr).encode("utf-8")[:256], float(when)))
    return np.array(rows, dtype=EVENTS_DTYPE)


def _merge_metadata(base, analysis_metadata):
    """Series metadata overlaid with the analysis settings (analysis wins), PYME's defaults applied."""
    md = MetaDataHandler()
    for source in (base, analysis_metadata):
        if source is None:
            continue
        if isinstance(source, dict):
            for key, value in source.items():
                md.setEntry(key, value)
        else:
            md.copyEntriesFrom(source)
    md.setEntry("EstimatedLaserOnFrameNo",
                md.getOrDefault("EstimatedLaserOnFrameNo", md.getOrDefault("Analysis.StartAt", 0)))
    fix_em_gain(md)
    return md


class LocalisationRule(Rule):
    """Localise every frame of a series on the cluster, one task per frame.

    Parameters
    ----------
    seriesName : str
        the series, ``PYME-CLUSTER://<serverfilter>/<path>.pcs`` (or a bare cluster path).
    analysisMetadata : MetaDataHandler or dict
        analysis settings (``Analysis.*``), laid over the series' own metadata.
    resultsFilename : str, optional
        cluster path of the results; default ``<series dir>/analysis/<stem>.h5r``. An existing file is
        never overwritten (``_1``, ``_2``, ... suffixes).
    startAt : int
        first frame released.
    dataSourceModule : str, optional
        kept for PYME compatibility (only cluster ``.pcs`` series are read).
    serverfilter : str, optional
        the cluster name in URIs; default the cluster's (by default this machine's name).
    """

    rule_type = "localization"

    def __init__(self, seriesName: str, analysisMetadata=None, resultsFilename: str | None = None,
                 startAt: int = 0, dataSourceModule: str | None = None, serverfilter: str | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(seriesName, str) or not seriesName:
            raise ValueError("seriesName must be the series' cluster URI")
        check_name(seriesName)
        if resultsFilename is not None:
            check_name(resultsFilename)
        self.seriesName = seriesName
        self.analysisMetadata = analysisMetadata
        self.resultsFilename = resultsFilename
        self.startAt = int(startAt)
        self.dataSourceModule = dataSourceModule
        self._serverfilter = serverfilter
        self._next = self.startAt
        self._resolved: dict[str, str] | None = None
        self._series = None
        self._metadata = None

    # -- names ------------------------------------------------------------------------------
    @property
    def serverfilter(self) -> str:
        """The cluster name in URIs: as given, else the series URI's, else the cluster's (by
        default this machine's name, PYME's default)."""
        if self._serverfilter is None:
            self._serverfilter = parse_cluster_uri(self.seriesName).serverfilter \
                or self.cluster.serverfilter
        return self._serverfilter

    @property
    def series_uri(self) -> str:
        return make_cluster_uri(cluster_path(self.seriesName), self.serverfilter)

    def _series_for_patterns(self) -> str | None:
        return self.series_uri

    def _resolve(self) -> dict[str, str]:
        if self._resolved is None:
            wanted = self.resultsFilename or results_filename_for(self.series_uri)
            results = cluster_path(verify_cluster_results_filename(cluster_path(wanted), self.cluster))
            self._resolved = {
                "results": results,
                "results_uri": make_cluster_uri(results, self.serverfilter),
                "metadata_uri": make_cluster_uri(results + ".json", self.serverfilter),
                "worker_url": self.cluster.data.aggregate_url(results, kind="h5r"),
            }
        return self._resolved

    @property
    def results_uri(self) -> str:
        """``PYME-CLUSTER://<serverfilter>/<results>.h5r`` (after the ``_N`` check)."""
        return self._resolve()["results_uri"]

    @property
    def output_files(self) -> dict[str, str]:
        return {"results": self.results_uri}

    def output_bindings(self) -> dict[str, str]:
        """The default (or given) results name → the ``_N`` name really used."""
        nominal = cluster_path(self.resultsFilename or results_filename_for(self.series_uri))
        return {nominal: self.results_uri}

    def _task_template(self) -> str:
        names = self._resolve()
        return render_template(localisation_template(self.series_uri, names["metadata_uri"],
                                                     names["worker_url"]))

    # -- data -------------------------------------------------------------------------------
    @property
    def series(self):
        """The :class:`~rules.series.ClusterSeries` being analysed."""
        if self._series is None:
            self._series = ClusterSeries(self.series_uri, self.cluster.data)
        return self._series

    def _source_metadata(self):
        try:
            return self.series.metadata()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"series {self.series_uri} not found on the cluster "
                                    "(it has no metadata.json)") from exc

    def _events(self) -> list:
        return list(self.series.events() or [])

    @property
    def metadata(self):
        """Series metadata overlaid with ``analysisMetadata`` (what the workers get)."""
        if self._metadata is None:
            self._metadata = _merge_metadata(self._source_metadata(), self.analysisMetadata)
        return self._metadata

    def _refresh(self) -> None:
        self.series.refresh()

    @property
    def total_frames(self) -> int:
        return int(self.series.n_frames)

    @property
    def data_complete(self) -> bool:
        return bool(self.series.is_complete)

    @property
    def complete(self) -> bool:
        return self.data_complete and self._next >= self.total_frames

    def get_new_tasks(self) -> tuple[int, int]:
        self._refresh()
        total = self.total_frames
        if total > 1000000:
            logger.warning("series %s has %d frames; only the first 1000000 are analysed",
                           self.series_uri, total)
            total = 1000000
        if total <= self._next:
            raise NoNewTasks()
        start, end = self._next, min(self._next + RELEASE_BATCH, total)
        self._next = end
        return start, end

    # -- push -------------------------------------------------------------------------------
    def prepare(self) -> dict[str, int]:
        """Upload the metadata (to the results file and ``<results>.json``); choose create arguments."""
        names = self._resolve()
        text = self.metadata.to_JSON()
        self.cluster.data.put_url(names["worker_url"] + "/MetaData", text.encode("utf-8"))
        self.cluster.data.put_file(names["results"] + ".json", text.encode("utf-8"))
        self._refresh()
        if self.data_complete:
            total = self.total_frames
            self._next = max(self._next, total)
            args = {"max_tasks": max(total, 1)}
            if self.startAt < total:
                args.update(release_start=self.startAt, release_end=total)
            return args
        return {}

    def _finish_release(self) -> None:
        self.cluster.rules.mark_release_complete(self._pushed_id())
        logger.info("rule %s: release complete (%d tasks)", self._rule_id,
                    max(0, self._released_end - self.startAt))

    def on_data_complete(self) -> None:
        """File the series' events into the results file's ``/Events`` table."""
        events = self._events()
        if not events:
            return
        self.cluster.data.append_records(self._resolve()["worker_url"] + "/Events",
                                         events_array(events), compress=False)


class SpoolLocalLocalizationRule(LocalisationRule):
    """Localise a series while it is being spooled by an in-process spooler (see ``rules.spooler``).

    Frame count, completion, metadata and events come from the spooler; a spooler with
    ``add_frame_listener`` wakes the release loop at each frame.
    """

    def __init__(self, spooler, seriesName: str, analysisMetadata=None, resultsFilename: str | None = None,
                 startAt: int = 0, serverfilter: str | None = None, **kwargs: Any):
        kwargs.setdefault("poll_interval", 1.0)
        super().__init__(seriesName, analysisMetadata, resultsFilename=resultsFilename,
                         startAt=startAt, serverfilter=serverfilter, **kwargs)
        if spooler is None:
            raise ValueError("SpoolLocalLocalizationRule needs a spooler")
        self.spooler = spooler

    def _source_metadata(self):
        return spooler_metadata(self.spooler)

    def _events(self) -> list:
        return spooler_events(self.spooler)

    def _refresh(self) -> None:
        pass

    @property
    def total_frames(self) -> int:
        return int(self.spooler.get_n_frames())

    @property
    def data_complete(self) -> bool:
        return bool(self.spooler.finished())

    def _after_post(self, post_args: dict) -> None:
        listen = getattr(self.spooler, "add_frame_listener", None)
        if callable(listen) and not self.complete:
            listen(self.notify)
        super()._after_post(post_args)

    def _finish_release(self) -> None:
        unlisten = getattr(self.spooler, "remove_frame_listener", None)
        if callable(unlisten):
            try:
                unlisten(self.notify)
            except (ValueError, KeyError):
                pass
        super()._finish_release()


__all__ = ["LocalisationRule", "SpoolLocalLocalizationRule", "verify_cluster_results_filename",
           "EVENTS_DTYPE", "events_array"]
