"""Localisation statistics a microscopist steers an acquisition by, updated batch by batch.

:class:`LocalisationStats` takes readable columns (:func:`rules.localisations.localisation_columns`)
as they arrive and keeps, in bounded memory: localisations per frame, fixed-bin histograms of
photons, background, PSF σ and precision, and the summary (count, per frame, median precision).
:func:`analysis_progress` turns frames spooled/analysed over time into the analysis lag and an ETA.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Histogram bins per quantity: (key, label, edges). Photons and background on log scales.
HISTOGRAMS = {
    "intensity": ("photons", np.geomspace(10.0, 1e6, 201)),
    "background": ("background [photon/px]", np.geomspace(0.1, 1e5, 201)),
    "sigma": ("PSF σ [nm]", np.linspace(0.0, 500.0, 201)),
    "uncertainty": ("precision [nm]", np.linspace(0.0, 100.0, 401)),
}


class Histogram:
    """Counts over fixed bin ``edges``; values outside them are counted as under/over."""

    def __init__(self, edges: np.ndarray):
        self.edges = np.asarray(edges, np.float64)
        self.counts = np.zeros(len(self.edges) - 1, np.int64)
        self.under = 0
        self.over = 0

    def add(self, values: np.ndarray) -> None:
        values = values[np.isfinite(values)]
        index = np.searchsorted(self.edges, values, side="right") - 1
        self.under += int(np.count_nonzero(index < 0))
        self.over += int(np.count_nonzero(index >= len(self.counts)))
        inside = index[(index >= 0) & (index < len(self.counts))]
        self.counts += np.bincount(inside, minlength=len(self.counts))

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.under + self.over

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, interpolated inside its bin (NaN when empty or outside the bins)."""
        total = self.total
        if total == 0:
            return float("nan")
        target = q * total - self.under
        if target < 0 or target > self.counts.sum():
            return float("nan")
        cumulative = np.cumsum(self.counts)
        i = int(np.searchsorted(cumulative, target, side="left"))
        i = min(i, len(self.counts) - 1)
        before = cumulative[i - 1] if i > 0 else 0
        inside = self.counts[i]
        fraction = (target - before) / inside if inside else 0.0
        return float(self.edges[i] + fraction * (self.edges[i + 1] - self.edges[i]))


@dataclass(frozen=True)
class Summary:
    """The summary line: localisations, frames analysed, per frame, median precision (nm)."""

    localisations: int
    frames: int
    per_frame: float
    median_precision_nm: float

    def text(self) -> str:
        precision = (f"{self.median_precision_nm:.1f} nm" if np.isfinite(self.median_precision_nm)
                     else "–")
        return (f"{self.localisations:,} localisations · {self.frames:,} frames · "
                f"{self.per_frame:.1f} per frame · median precision {precision}")


class LocalisationStats:
    """Running statistics of a localisation table; feed it batches with :meth:`add`."""

    def __init__(self):
        self.count = 0
        self._per_frame = np.zeros(1024, np.int64)
        self._max_frame = -1
        self.histograms = {key: Histogram(edges) for key, (_, edges) in HISTOGRAMS.items()}

    def add(self, columns: dict[str, np.ndarray]) -> None:
        """Add a batch of readable columns (needs ``frame`` and the histogram keys)."""
        frames = columns["frame"]
        if not len(frames):
            return
        index = frames.astype(np.int64)
        index = index[index >= 0]
        if len(index):
            top = int(index.max())
            if top >= len(self._per_frame):
                grown = np.zeros(max(top + 1, 2 * len(self._per_frame)), np.int64)
                grown[:len(self._per_frame)] = self._per_frame
                self._per_frame = grown
            self._per_frame += np.bincount(index, minlength=len(self._per_frame))
            self._max_frame = max(self._max_frame, top)
        self.count += len(frames)
        for key, histogram in self.histograms.items():
            histogram.add(columns[key])

    def per_frame(self) -> np.ndarray:
        """Localisations in each frame 0 … last frame seen."""
        return self._per_frame[:self._max_frame + 1].copy()

    def summary(self, frames_analysed: int | None = None) -> Summary:
        """Summary over ``frames_analysed`` frames (default: up to the last frame with a
        localisation)."""
        frames = self._max_frame + 1 if frames_analysed is None else max(int(frames_analysed), 0)
        per_frame = self.count / frames if frames else 0.0
        return Summary(self.count, frames, per_frame,
                       self.histograms["uncertainty"].quantile(0.5))


@dataclass(frozen=True)
class Progress:
    """Analysis against acquisition: frames spooled and analysed, rates (frames/s), lag, ETA (s)."""

    spooled: int
    analysed: int
    spooling_done: bool
    spool_rate: float
    analysis_rate: float
    eta_s: float | None

    @property
    def lag(self) -> int:
        """Frames spooled but not analysed yet."""
        return max(self.spooled - self.analysed, 0)

    def text(self) -> str:
        if self.lag == 0 and self.spooling_done:
            return f"all {self.analysed:,} frames analysed"
        eta = "–" if self.eta_s is None else _duration(self.eta_s)
        state = ("spooling done" if self.spooling_done else
                 f"spooling {self.spool_rate:.0f} frames/s" if self.spool_rate > 0 else "spooling")
        return (f"analysed {self.analysed:,} of {self.spooled:,} frames ({state}) · lag "
                f"{self.lag:,} frames · analysis {self.analysis_rate:.0f} frames/s · ETA {eta}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressTracker:
    """Rates from samples ``(time, spooled, analysed)`` over the last ``window`` seconds."""

    def __init__(self, window: float = 10.0):
        self.window = window
        self._samples: list[tuple[float, int, int]] = []

    def update(self, now: float, spooled: int, analysed: int, spooling_done: bool) -> Progress:
        self._samples.append((now, spooled, analysed))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.pop(0)
        t0, s0, a0 = self._samples[0]
        span = now - t0
        spool_rate = (spooled - s0) / span if span > 0 else 0.0
        analysis_rate = (analysed - a0) / span if span > 0 else 0.0
        if spooling_done:
            spool_rate = 0.0
        lag = max(spooled - analysed, 0)
        eta: float | None
        if lag == 0:
            eta = 0.0 if spooling_done else None
        elif spooling_done:
            eta = lag / analysis_rate if analysis_rate > 0 else None
        else:  # catching up while frames still arrive
            gain = analysis_rate - spool_rate
            eta = lag / gain if gain > 0 else None
        return Progress(spooled, analysed, spooling_done, spool_rate, analysis_rate, eta)
