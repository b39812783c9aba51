"""A simulated single-molecule acquisition that spools a PYME series into a data server.

Fluorophores sit on a structure (filaments or rings) and blink; each frame is the sum of their
pixel-integrated Gaussian PSFs (σ ≈ 130 nm at 100 nm pixels) over a uniform background, with
photon shot noise, camera read noise, gain and offset matching the metadata written with the
series (rendered by ``cluster.frame_render``, with the camera model's statistics). Frames go out
in PYME's layout (``metadata.json`` first, Huffman-coded ``frame%05d.pzf`` through pipelined PUTs,
then ``events.json`` last) at the requested frame rate, counted once the server holds them, and
the ground truth (``frame, x_nm, y_nm, photons`` per emitter and frame) is written beside them as
``ground_truth.npy``.  The camera is one of ``rules.simulation.CAMERAS``: the uniform sCMOS-like
camera, an EMCCD (:data:`EMCCD_CAMERA`), or the sCMOS camera with per-pixel offset and read noise
(hot pixels included; ``scmos=True``), whose dark and variance maps are written beside the frames
(``camera_dark.npy``, ``camera_variance.npy``) before the metadata, which names them in
``Camera.DarkMapID`` / ``Camera.VarianceMapID``.

:class:`SimulatedAcquisition` follows the engine's spooler protocol (``rules.spooler``), so a
``SpoolLocalLocalizationRule`` can analyse the series live while it spools.
"""
from __future__ import annotations

import collections
import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cluster.frame_render import FrameRenderer
from cluster.localisation.camera import CameraModel
from cluster.localisation.camera_maps import DARK_KEY, VARIANCE_KEY, CameraMaps
from cluster.localisation.synthetic import SIMULATED_CAMERA, simulate_scmos_maps
from cluster.pzf import COMPRESSION_HUFFMAN, encode_frame
from rules.dataserver_client import DataClient
from rules.metadata import MetaDataHandler
from rules.simulation import CAMERAS, STRUCTURES, SimulationSettings, series_path_for
from rules.uris import make_cluster_uri

logger = logging.getLogger(__name__)

#: An EMCCD camera as the simulator offers it: EM gain 100 (noise factor √2), 10 e⁻/ADU, 80 e⁻
#: read noise before the gain's effect (0.8 e⁻ effective).
EMCCD_CAMERA = CameraModel(ad_offset=100.0, electrons_per_count=10.0, em_gain=100.0,
                           read_noise=80.0, noise_factor=1.41)
#: The camera of each of ``rules.simulation.CAMERAS``, and whether it has pixel maps.
CAMERA_MODELS = {"sCMOS": (SIMULATED_CAMERA, False), "sCMOS with pixel maps": (SIMULATED_CAMERA, True),
                 "EMCCD": (EMCCD_CAMERA, False)}


@dataclass(frozen=True)
class SampleModel:
    """Fluorophore brightness, blinking and background."""

    pixel_size_nm: float = 100.0
    psf_sigma_nm: float = 130.0
    photons_mean: float = 1000.0
    background_photons: float = 50.0
    emitters_per_frame: float = 30.0
    mean_on_frames: float = 2.0


class EventLogger:
    """PYME-style event log: ``[name, description, time]`` triples."""

    def __init__(self):
        self.events: list[list] = []
        self._lock = threading.Lock()

    def logEvent(self, name: str, description: str = "", timestamp: float | None = None) -> None:  # noqa: N802 - PYME's name
        with self._lock:
            self.events.append([name, description, time.time() if timestamp is None else timestamp])

    def to_JSON(self) -> str:  # noqa: N802 - PYME's name
        with self._lock:
            return json.dumps(self.events)


def _structure_points(kind: str, size_nm: float, rng: np.random.Generator) -> np.ndarray:
    """Fluorophore positions (n, 2) in nm on filaments or rings inside the field."""
    margin = 0.05 * size_nm
    if kind == "filaments":
        points = []
        for _ in range(8):
            pos = rng.uniform(margin, size_nm - margin, 2)
            angle = rng.uniform(0, 2 * np.pi)
            steps = int(size_nm / 5)
            turn = rng.normal(0, 0.01, steps).cumsum()
            angles = angle + turn
            track = pos + np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1) * 5.0, 0)
            inside = np.all((track > margin) & (track < size_nm - margin), axis=1)
            points.append(track[inside])
        return np.concatenate(points)
    if kind == "rings":
        centres = rng.uniform(margin + 300, size_nm - margin - 300, (60, 2))
        radii = rng.uniform(120, 250, 60)
        points = []
        for centre, radius in zip(centres, radii):
            n = int(2 * np.pi * radius / 5)
            theta = rng.uniform(0, 2 * np.pi, n)
            points.append(centre + radius * np.stack([np.cos(theta), np.sin(theta)], 1))
        return np.concatenate(points)
    raise ValueError(f"unknown structure {kind!r}; choose one of {', '.join(STRUCTURES)}")


class FrameSimulator:
    """Generates frames (uint16, axis 0 = x) and their ground truth, reproducibly from a seed."""

    def __init__(self, size: int = 256, structure: str = "filaments", seed: int | None = None,
                 camera: CameraModel = SIMULATED_CAMERA, sample: SampleModel = SampleModel(),
                 scmos: bool = False, camera_name: str = "sCMOS"):
        self.size, self.camera, self.sample = size, camera, sample
        self.camera_name = camera_name
        self.rng = np.random.default_rng(seed)
        self.maps = (simulate_scmos_maps((size, size), np.random.default_rng(self.rng.integers(2**31)))
                     if scmos else CameraMaps())
        self.positions = _structure_points(structure, size * sample.pixel_size_nm, self.rng)
        n = len(self.positions)
        on_fraction = min(0.5, sample.emitters_per_frame / max(n, 1))
        self._p_off = 1.0 / sample.mean_on_frames
        self._p_on = on_fraction * self._p_off / (1.0 - on_fraction)
        self._on = self.rng.random(n) < on_fraction
        self.renderer = FrameRenderer((size, size), camera, sample.background_photons,
                                      sample.psf_sigma_nm / sample.pixel_size_nm, self.maps)

    def next_frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` as uint16 ADU, and its truth rows ``(frame, x_nm, y_nm, photons)``."""
        flip = self.rng.random(len(self._on))
        self._on = np.where(self._on, flip >= self._p_off, flip < self._p_on)
        xy = self.positions[self._on]
        photons = self.rng.lognormal(np.log(self.sample.photons_mean), 0.3, len(xy))
        # PYME's convention: pixel i is centred on i × pixel size (fixtures' series_truth_nm.npy)
        frame = self.renderer.render(xy / self.sample.pixel_size_nm, photons, self.rng)
        truth = np.column_stack([np.full(len(xy), index, float), xy, photons])
        return frame, truth

    def metadata(self) -> MetaDataHandler:
        sample = self.sample
        return MetaDataHandler({
            **self.camera.metadata(), "Camera.Name": f"Spoolside simulated {self.camera_name}",
            "Camera.ROIWidth": self.size, "Camera.ROIHeight": self.size,
            "voxelsize.x": sample.pixel_size_nm / 1000.0, "voxelsize.y": sample.pixel_size_nm / 1000.0,
            "voxelsize.z": 0.2, "voxelsize.units": "um",
            "Simulation.PSFSigmaNM": sample.psf_sigma_nm, "Simulation.MeanPhotons": sample.photons_mean,
            "Simulation.BackgroundPhotons": sample.background_photons,
            "DimOrder": "XYCZT", "SizeC": 1, "SizeT": -1, "SizeZ": 1,
        })


class SimulatedAcquisition:
    """Spools a simulated series at ``fps`` from a background thread; a spooler for live rules."""

    def __init__(self, data: DataClient, name: str, frames: int = 2000, fps: float = 100.0,
                 structure: str = "filaments", size: int = 256, seed: int | None = None,
                 serverfilter: str = "", sample: SampleModel = SampleModel(), scmos: bool = False,
                 camera: str | None = None):
        if frames < 1:
            raise ValueError("frames must be at least 1")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.data = data
        self.series_path = series_path_for(name)
        self.series_uri = make_cluster_uri(self.series_path, serverfilter)
        self.n_target, self.fps = frames, fps
        camera = camera or ("sCMOS with pixel maps" if scmos else "sCMOS")
        if camera not in CAMERA_MODELS:
            raise ValueError(f"unknown camera {camera!r}; choose one of {', '.join(CAMERAS)}")
        model, maps = CAMERA_MODELS[camera]
        self.simulator = FrameSimulator(size, structure, seed, camera=model, sample=sample,
                                        scmos=maps, camera_name=camera.split()[0])
        self.metadata = self.simulator.metadata()
        self._map_files = {}
        for key, stem, array in ((DARK_KEY, "camera_dark", self.simulator.maps.dark),
                                 (VARIANCE_KEY, "camera_variance", self.simulator.maps.variance)):
            if array is not None:
                path = f"{self.series_path}/{stem}.npy"
                self._map_files[path] = array
                self.metadata[key] = make_cluster_uri(path, serverfilter)
        self.metadata["imageID"] = int(self.simulator.rng.integers(1, 2**31))
        self.evtLogger = self.event_logger = EventLogger()
        self._n_spooled = 0
        self._stored_times: collections.deque[float] = collections.deque(maxlen=4096)
        self._times_lock = threading.Lock()
        self._finished = threading.Event()
        self._stop = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @classmethod
    def from_settings(cls, data: DataClient, name: str, settings: SimulationSettings, *,
                      seed: int | None = None, serverfilter: str = "") -> "SimulatedAcquisition":
        """An acquisition of ``settings`` (checked: ``rules.settings.SettingError`` if not)."""
        settings = settings.checked()
        sample = SampleModel(photons_mean=settings.photons, background_photons=settings.background,
                             emitters_per_frame=settings.emitters_per_frame)
        return cls(data, name, frames=settings.frames, fps=settings.fps,
                   structure=settings.structure, seed=seed, serverfilter=serverfilter,
                   sample=sample, camera=settings.camera)

    # -- spooler protocol -------------------------------------------------------------------
    def get_n_frames(self) -> int:
        return self._n_spooled

    def finished(self) -> bool:
        return self._finished.is_set()

    def add_frame_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    # -- running ----------------------------------------------------------------------------
    def start(self) -> "SimulatedAcquisition":
        """Write the metadata (so the series exists), then spool frames in a thread."""
        if self.data.exists(f"{self.series_path}/metadata.json"):
            raise FileExistsError(f"series {self.series_path} already exists on the cluster")
        for path, array in self._map_files.items():     # maps first: analysis needs them
            buffer = io.BytesIO()
            np.save(buffer, array)
            self.data.put_file(path, buffer.getvalue())
        self.metadata["StartTime"] = time.time()
        self.data.put_file(f"{self.series_path}/metadata.json", self.metadata.to_JSON().encode())
        self.evtLogger.logEvent("StartAq", "0")
        encode_frame(np.zeros((4, 4), np.uint16), compression=COMPRESSION_HUFFMAN)  # compiled now
        self._thread = threading.Thread(target=self._spool, name=f"simulate-{self.series_path}",
                                        daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Spool the whole series in the calling thread."""
        self.start()
        self.wait()
        if self.error is not None:
            raise self.error

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished()

    def stop(self) -> None:
        """End the acquisition early; the series is completed with the frames spooled so far."""
        self._stop.set()

    def spool_rate(self, window: float = 2.0) -> float:
        """Frames/s the data server confirmed over the last ``window`` seconds (0 before two)."""
        now = time.monotonic()
        with self._times_lock:
            recent = [t for t in self._stored_times if t >= now - window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def _frame_stored(self, _path: str) -> None:
        """A frame is on the data server (replies come in order): analysis may read it."""
        with self._times_lock:
            self._stored_times.append(time.monotonic())
        self._n_spooled += 1
        for callback in list(self._listeners):
            callback()

    def _spool(self) -> None:
        truth = []
        t0 = due = time.monotonic()
        late = max(1.0, 2.0 / self.fps)      # a short stall is caught up, a long one is not
        sequence_id = self.metadata["imageID"]
        try:
            with self.data.pipelined_puts(on_stored=self._frame_stored) as puts:
                for i in range(self.n_target):
                    if self._stop.is_set():
                        break
                    now = time.monotonic()
                    if due > now:
                        time.sleep(due - now)
                    elif now - due > late:      # far behind: go on at the rate from now
                        due = now               # rather than in a long burst
                    due += 1.0 / self.fps
                    frame, rows = self.simulator.next_frame(i)
                    truth.append(rows)
                    puts.put(f"{self.series_path}/frame{i:05d}.pzf",
                             encode_frame(frame, frame_num=i, sequence_id=sequence_id,
                                          timestamp=int(time.time() * 1e6),
                                          compression=COMPRESSION_HUFFMAN))  # as PYME Acquire
                puts.flush()
            self.evtLogger.logEvent("StopAq", str(self._n_spooled))
            buffer = io.BytesIO()
            np.save(buffer, np.concatenate(truth) if truth else np.zeros((0, 4)))
            self.data.put_file(f"{self.series_path}/ground_truth.npy", buffer.getvalue())
            self.data.put_file(f"{self.series_path}/events.json", self.evtLogger.to_JSON().encode())
        except BaseException as exc:  # noqa: BLE001 - reported through .error and the log
            self.error = exc
            logger.exception("simulated acquisition of %s failed", self.series_path)
        finally:
            self._finished.set()
            for callback in list(self._listeners):
                callback()
        logger.info("spooled %d frames of %s in %.1f s", self._n_spooled, self.series_path,
                    time.monotonic() - t0)
