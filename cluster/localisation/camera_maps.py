"""sCMOS camera maps: per-pixel dark offset, read-noise variance and flat field (PYME's keys).

``Camera.DarkMapID`` names a map of the per-pixel offset in ADU (used instead of
``Camera.ADOffset``), ``Camera.VarianceMapID`` one of the per-pixel read-noise variance in e⁻²
(instead of ``Camera.ReadNoise``²), ``Camera.FlatfieldMapID`` one of per-pixel factors the
offset-corrected data are multiplied by (mean ≈ 1).  An ID that is empty or ``<none>`` means no
map.  Each ID is a cluster path or ``PYME-CLUSTER://`` URI, or a local file path.

Formats: ``.npy``; ``.tif``/``.tiff`` (first page); ``.h5`` (PYME's image file: the first slice of
its ``/ImageData`` array, stored ``(slice, x, y)``).

Orientation: maps are in PYME's ``(x, y)`` orientation, axis 0 = x like the frames.  PYME loads a
map through ``ImageStack(...).data[:, :, 0]`` and cuts it with ``map[x0:x1, y0:y1]``
(``PYME.localization.remFitBuf.CameraInfoManager``); its TIFF reader returns a page's array as
stored (no transpose) and its TIFF writer stores ``data[:, :, i]`` as is, so a map file's first
array axis is x in every format.  Maps are full-sensor maps cut to the series' camera ROI:
``Camera.ROIOriginX/Y`` (0-based) or else the older ``Camera.ROIPosX/Y`` (1-based), with
``Camera.ROIWidth/ROIHeight`` (pyme-protocol.md §5.3); a map already of the frame's size is used
as it is.
"""
from __future__ import annotations

import dataclasses
import io
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from rules.metadata import MetadataLike

from .camera import CameraModel

DARK_KEY = "Camera.DarkMapID"
VARIANCE_KEY = "Camera.VarianceMapID"
FLATFIELD_KEY = "Camera.FlatfieldMapID"
MAP_KEYS = (DARK_KEY, VARIANCE_KEY, FLATFIELD_KEY)


class CameraMapError(ValueError):
    """A named camera map cannot be read or does not fit the frames."""


def map_ids(md: MetadataLike) -> dict[str, str]:
    """The camera maps ``md`` names, ``{key: id}`` (empty and ``<none>`` IDs left out)."""
    out = {}
    for key in MAP_KEYS:
        value = md.get(key, None)
        if value is None:
            continue
        value = str(value).strip()
        if value and value != "<none>":
            out[key] = value
    return out


def camera_roi(md: MetadataLike) -> tuple[int, int, int, int] | None:
    """``(x0, y0, width, height)`` of the series on the sensor (0-based), or None when the
    metadata give no ROI size."""
    try:
        width, height = md.get("Camera.ROIWidth", None), md.get("Camera.ROIHeight", None)
        if width is None or height is None:
            return None
        origin_x, pos_x = md.get("Camera.ROIOriginX", None), md.get("Camera.ROIPosX", None)
        if origin_x is not None:
            x0, y0 = int(origin_x), int(md.get("Camera.ROIOriginY", 0))
        elif pos_x is not None:
            x0, y0 = int(pos_x) - 1, int(md.get("Camera.ROIPosY", 1)) - 1
        else:
            x0 = y0 = 0
        return x0, y0, int(width), int(height)
    except (TypeError, ValueError) as exc:
        raise CameraMapError(f"bad camera ROI metadata: {exc}") from exc


FORMATS = (".npy", ".tif", ".tiff", ".h5")


def map_format(name: str) -> str:
    """The format (extension) of map ``name``; :class:`CameraMapError` if not a map format."""
    suffix = PurePosixPath(name.replace("\\", "/").split("?")[0]).suffix.lower()
    if suffix not in FORMATS:
        raise CameraMapError(f"unsupported map format {suffix or '(no extension)'!r}; "
                             "use .npy, .tif or .h5")
    return suffix


def decode_map(name: str, payload: bytes) -> np.ndarray:
    """A 2-D float32 map from the bytes of a map file, by its extension."""
    suffix = map_format(name)
    if suffix == ".npy":
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        array = tifffile.imread(io.BytesIO(payload), key=0)
    elif suffix == ".h5":
        import tables

        with tables.open_file("map.h5", "r", driver="H5FD_CORE", driver_core_image=payload,
                              driver_core_backing_store=0) as h5:
            if "/ImageData" not in h5:
                raise CameraMapError("no /ImageData array in the .h5 file")
            node = h5.get_node("/ImageData")
            array = node[0] if node.ndim == 3 else node[:]
    array = np.squeeze(np.asarray(array))
    if array.ndim != 2:
        raise CameraMapError(f"a camera map must be 2-D, got shape {array.shape}")
    return array.astype(np.float32)


def cut_to_roi(array: np.ndarray, roi: tuple[int, int, int, int] | None,
               frame_shape: tuple[int, int]) -> np.ndarray:
    """The part of a full-sensor map under the series' ROI, checked against the frame shape."""
    if array.shape == tuple(frame_shape):
        return array
    if roi is None:
        raise CameraMapError(f"map of shape {array.shape} does not match frames of shape "
                             f"{tuple(frame_shape)} and the metadata give no camera ROI")
    x0, y0, w, h = roi
    if (w, h) != tuple(frame_shape):
        raise CameraMapError(f"Camera.ROIWidth/Height {w}×{h} do not match frames of shape "
                             f"{tuple(frame_shape)}")
    if x0 < 0 or y0 < 0 or x0 + w > array.shape[0] or y0 + h > array.shape[1]:
        raise CameraMapError(f"camera ROI x {x0}–{x0 + w}, y {y0}–{y0 + h} lies outside the "
                             f"map of shape {array.shape}")
    return np.ascontiguousarray(array[x0:x0 + w, y0:y0 + h])


@dataclasses.dataclass(frozen=True)
class CameraMaps:
    """Per-pixel camera maps cut to the frames (None where the metadata name no map)."""

    dark: np.ndarray | None = None        # ADU
    variance: np.ndarray | None = None    # read-noise variance, e⁻²
    flatfield: np.ndarray | None = None   # factor applied to offset-corrected data

    @property
    def any(self) -> bool:
        return self.dark is not None or self.variance is not None or self.flatfield is not None

    def to_units(self, camera: CameraModel, adu: np.ndarray) -> np.ndarray:
        """ADU → effective photon units (float32): minus the dark map (or ``Camera.ADOffset``),
        times the flat field, as PYME's ``correctImage``, then :meth:`CameraModel.to_units`'s
        gain."""
        if self.dark is None and self.flatfield is None:
            return camera.to_units(adu)
        data = np.asarray(adu, np.float32) - (
            self.dark if self.dark is not None else np.float32(camera.ad_offset))
        if self.flatfield is not None:
            data *= self.flatfield
        return data / np.float32(camera.adu_per_unit)

    def read_variance_units(self, camera: CameraModel) -> np.ndarray | None:
        """Per-pixel read-noise variance in effective photon units (the flat field scales it
        with the data), or None without a variance map (then ``camera.gamma`` applies)."""
        if self.variance is None:
            return None
        var = self.variance / np.float32((camera.em_gain * camera.noise_factor ** 2) ** 2)
        if self.flatfield is not None:
            var = var * self.flatfield ** 2
        return var.astype(np.float32)


def read_local(name: str) -> bytes:
    """Read a map named by a local path."""
    return Path(name).expanduser().read_bytes()


def load_camera_maps(md: MetadataLike, frame_shape: tuple[int, int],
                     read: Callable[[str], bytes] = read_local) -> CameraMaps:
    """Load, check and cut the maps ``md`` names; ``read(id)`` returns a map file's bytes.

    Raises :class:`CameraMapError` naming the key and the map when one cannot be used.
    """
    ids = map_ids(md)
    if not ids:
        return CameraMaps()
    roi = camera_roi(md)
    loaded = {}
    for key, name in ids.items():
        try:
            map_format(name)
            array = cut_to_roi(decode_map(name, read(name)), roi, frame_shape)
        except Exception as exc:  # noqa: BLE001 - any failure: the task fails naming the map
            raise CameraMapError(f"cannot use {key} {name!r}: {exc}") from exc
        if not np.isfinite(array).all():
            raise CameraMapError(f"cannot use {key} {name!r}: it holds NaN or infinite values")
        if key == VARIANCE_KEY and (array < 0).any():
            raise CameraMapError(f"cannot use {key} {name!r}: negative variances")
        if key == FLATFIELD_KEY and not (array > 0).all():
            raise CameraMapError(f"cannot use {key} {name!r}: flat-field factors must be > 0")
        loaded[key] = array
    return CameraMaps(dark=loaded.get(DARK_KEY), variance=loaded.get(VARIANCE_KEY),
                      flatfield=loaded.get(FLATFIELD_KEY))


class CameraMapCache:
    """Camera maps loaded once per series (a worker keeps one; a few series at a time)."""

    def __init__(self, capacity: int = 4):
        self._capacity = capacity
        self._maps: OrderedDict[tuple, CameraMaps] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, series: str, md: MetadataLike, frame_shape: tuple[int, int],
            read: Callable[[str], bytes] = read_local) -> CameraMaps:
        ids = map_ids(md)
        key = (series, tuple(sorted(ids.items())), camera_roi(md) if ids else None,
               tuple(frame_shape))
        with self._lock:
            if key in self._maps:
                self._maps.move_to_end(key)
                return self._maps[key]
        maps = load_camera_maps(md, frame_shape, read)
        with self._lock:
            self._maps[key] = maps
            while len(self._maps) > self._capacity:
                self._maps.popitem(last=False)
        return maps
