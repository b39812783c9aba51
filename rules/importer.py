"""Local data into the cluster as a PYME series: TIFF / OME-TIFF stacks, ImageJ hyperstacks,
``.pcs`` series folders and PYME ``.h5`` series files on disk.

:func:`open_source` reads a file or folder and checks all of it (every frame is read; dtype,
dimensions and frame count checked) before anything is written, so a bad file gets a clear
:class:`ImportDataError` and leaves no half series.  Its metadata (pixel size from OME-XML or
ImageJ's tags; PYME's ``metadata.json`` or ``/MetaData`` for a series) is kept; :data:`REQUIRED` keys the
file does not give must be supplied (the window asks, the command line has options).
:func:`import_series` then uploads, in PYME's order, ``metadata.json``, the frames as Huffman-coded
PZF files (as PYME Acquire spools them; PZF frames of a series folder or ``.h5`` file are copied
as they are) and ``events.json`` last (the file's own events when it has them), through
:class:`rules.dataserver_client.DataClient`, reporting progress.
"""
from __future__ import annotations

import json
import pathlib
import pickle
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from rules.dataserver_client import DataClient
from rules.hdf5_attrs import plain_value
from rules.metadata import MetaDataHandler
from rules.pzf import COMPRESSION_HUFFMAN, PZFError, decode_frame, encode_frame
from rules.settings import SettingError, check_setting
from rules.tiff_metadata import tiff_pixel_size_nm
from rules.uris import check_name

__all__ = ["REQUIRED", "ImportDataError", "ImportSource", "open_source", "import_series",
           "missing_metadata"]

#: Keys a series needs for localisation that a file may not carry (µm, ADU, e⁻/ADU).
REQUIRED = ("voxelsize.x", "voxelsize.y", "Camera.ADOffset", "Camera.ElectronsPerCount")
TIFF_SUFFIXES = (".tif", ".tiff")
H5_SUFFIXES = (".h5", ".hdf5")
FRAME_DTYPES = (np.dtype("u1"), np.dtype("u2"), np.dtype("f4"))


class ImportDataError(ValueError):
    """A file or folder that cannot be imported; the message says why and what to do."""


@dataclass
class ImportSource:
    """A file or folder read and checked, ready to upload."""

    path: pathlib.Path
    kind: str                      # "tiff", "ome-tiff", "imagej-tiff", "pcs", "h5" or "h5-pzf"
    n_frames: int
    frame_shape: tuple[int, int]   # PYME's (x, y)
    dtype: np.dtype
    metadata: dict[str, Any] = field(default_factory=dict)
    events: list | None = None
    _stack: np.ndarray | None = None            # TIFF: (t, y, x)
    _files: list[pathlib.Path] | None = None    # .pcs: the PZF files
    _h5_rows: list[int] | None = None           # .h5: the row of each frame (read one at a time)

    def frames(self) -> Iterator[bytes]:
        """Each frame as a PZF file (Huffman-coded unless copied from a series folder or file).
        An ``.h5`` file is read one frame at a time, never whole."""
        if self._h5_rows is not None:
            yield from _h5_frame_files(self)
            return
        if self._files is not None:
            for path in self._files:
                yield path.read_bytes()
            return
        assert self._stack is not None
        sequence = int(self.metadata.get("imageID", 0))
        for i in range(self.n_frames):
            yield encode_frame(self._stack[i].T, frame_num=i, sequence_id=sequence,
                               compression=COMPRESSION_HUFFMAN)


def missing_metadata(source: ImportSource, overrides: dict[str, Any] | None = None) -> list[str]:
    """The :data:`REQUIRED` keys neither the file nor ``overrides`` give."""
    given = {**source.metadata, **(overrides or {})}
    return [key for key in REQUIRED if given.get(key) in (None, "")]


def open_source(path: str | pathlib.Path) -> ImportSource:
    """Read and check a TIFF file, a ``.pcs`` series folder or a PYME ``.h5`` series file (see the
    module docstring)."""
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise ImportDataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_pcs(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _open_tiff(path)
    if path.suffix.lower() in H5_SUFFIXES:
        return _open_h5(path)
    raise ImportDataError(f"{path.name}: not a TIFF stack (.tif, .tiff), a PYME .h5 series file or "
                          "a .pcs series folder")


def _open_tiff(path: pathlib.Path) -> ImportSource:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            kind = "ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff"
            x_nm, y_nm, _ = tiff_pixel_size_nm(tif)
            stack = series.asarray()
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise ImportDataError(f"{path.name}: not a readable TIFF (truncated or damaged?): {exc}") from exc
    if "S" in axes and shape[axes.index("S")] > 1:
        raise ImportDataError(f"{path.name}: an RGB image ({axes} {shape}), not camera frames")
    if "Y" not in axes or "X" not in axes:
        raise ImportDataError(f"{path.name}: no image plane in axes {axes!r}")
    others = [(a, n) for a, n in zip(axes, shape) if a not in "YX" and n > 1]
    if not others:
        raise ImportDataError(f"{path.name}: a single 2-D image ({shape[axes.index('Y')]}×"
                              f"{shape[axes.index('X')]}), not a stack of frames")
    if len(others) > 1:
        raise ImportDataError(f"{path.name}: a hyperstack with more than one non-image axis "
                              f"({', '.join(f'{a}={n}' for a, n in others)}); save one channel / "
                              "one time or z series as its own stack first")
    if stack.dtype.newbyteorder("=") not in FRAME_DTYPES:
        raise ImportDataError(f"{path.name}: pixels are {stack.dtype}; camera frames must be "
                              "uint16 (or uint8 / float32)")
    order = [axes.index(others[0][0]), axes.index("Y"), axes.index("X")]
    keep = [axes.index(a) for a in axes if a in (others[0][0], "Y", "X")]
    stack = np.ascontiguousarray(np.moveaxis(stack.reshape([shape[i] for i in keep]),
                                             [keep.index(i) for i in order], [0, 1, 2]))
    metadata: dict[str, Any] = {}
    if x_nm is not None and y_nm is not None:
        metadata.update({"voxelsize.x": x_nm / 1e3, "voxelsize.y": y_nm / 1e3,
                         "voxelsize.units": "um"})
    return ImportSource(path, kind, stack.shape[0], (stack.shape[2], stack.shape[1]),
                        stack.dtype.newbyteorder("="), metadata, None, _stack=stack)


def _open_pcs(path: pathlib.Path) -> ImportSource:
    md_path = path / "metadata.json"
    if not md_path.is_file():
        raise ImportDataError(f"{path.name}: a folder without metadata.json is not a PYME series "
                              "(.pcs) folder")
    try:
        metadata = json.loads(md_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportDataError(f"{path.name}/metadata.json is not valid JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ImportDataError(f"{path.name}/metadata.json must hold a JSON object of dotted keys")
    files = sorted(path.glob("frame*.pzf"))
    if not files:
        raise ImportDataError(f"{path.name}: no frameNNNNN.pzf files")
    expected = [f"frame{i:05d}.pzf" for i in range(len(files))]
    if [f.name for f in files] != expected:
        missing = sorted(set(expected) - {f.name for f in files})
        raise ImportDataError(f"{path.name}: frames are not numbered 0..{len(files) - 1} "
                              f"(missing {', '.join(missing[:3]) or 'none'})")
    shape, dtype = _check_pzf_frames(
        (f"{path.name}/{f.name}", f.read_bytes()) for f in files)  # every frame must decode
    events = None
    events_path = path / "events.json"
    if events_path.is_file():
        try:
            events = json.loads(events_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImportDataError(f"{path.name}/events.json is not valid JSON: {exc}") from exc
    return ImportSource(path, "pcs", len(files), (shape[0], shape[1]), dtype, metadata, events,
                        _files=files)


def _check_pzf_frames(frames: Iterable[tuple[str, bytes]]) -> tuple[tuple[int, int], np.dtype]:
    """Decode every ``(label, PZF bytes)``; the one 2-D (x, y) shape and dtype they all share."""
    first: np.ndarray | None = None
    label = ""
    for label, payload in frames:
        try:
            frame = decode_frame(payload)
        except PZFError as exc:
            raise ImportDataError(f"{label}: {exc}") from exc
        if first is None:
            first = frame
        if (frame.shape, frame.dtype) != (first.shape, first.dtype):
            raise ImportDataError(f"{label}: {frame.shape} {frame.dtype} frame in a series of "
                                  f"{first.shape} {first.dtype} frames")
    if first is None:
        raise ImportDataError(f"{label or 'the series'}: no frames")
    if first.ndim != 2:
        raise ImportDataError(f"{label}: frames of shape {first.shape} are not 2-D")
    return (first.shape[0], first.shape[1]), first.dtype


def _open_h5(path: pathlib.Path) -> ImportSource:
    """A PYME ``.h5`` series file, read with PyTables. The layout facts it rests on:

    - ``/MetaData``: flat dotted keys as attributes, one sub-group per key component
      (pyme-protocol.md §5.3), read by :func:`rules.hdf5_attrs.read_metadata_from`, whose import
      makes attribute unpickling data-only (a crafted file cannot run code).
    - ``/Events``: an optional table of PYME's events record (``EventName``, ``EventDescr``, ``Time``;
      §5.5), kept as ``events.json``'s ``[name, description, time]`` triples.
    - Frames, either of two layouts:

      * ``/ImageData`` (PYME's classic HDF spooler): an array of frames, dimension order (t, x, y)
        as PYME's data-format docs state — each row is already a frame in PYME's (x, y)
        orientation, re-encoded here as a Huffman PZF like a TIFF frame.
      * ``/PZFImageData`` (the data server's ``__aggregate_h5`` container, §4.3): one row per frame,
        each row a whole PZF file's bytes, copied unchanged; the optional ``/PZFImageIndex`` table
        (``FrameNum``, ``Position``: row of that frame) gives the frame order, otherwise rows are
        in frame order.
    """
    import tables

    from rules.hdf5_attrs import read_metadata_from

    try:
        with tables.open_file(str(path), "r") as h5:
            metadata = read_metadata_from(h5)
            events = _h5_events(h5, path.name) if "Events" in h5.root else None
            if "ImageData" in h5.root:
                kind = "h5"
                shape, dtype, rows = _h5_check_raw(h5.root.ImageData, path.name)
            elif "PZFImageData" in h5.root:
                kind = "h5-pzf"
                rows = _h5_pzf_rows(h5, path.name)
                node = h5.root.PZFImageData
                shape, dtype = _check_pzf_frames(  # every frame must decode, read one by one
                    (f"{path.name} frame {i}", bytes(node[row])) for i, row in enumerate(rows))
            else:
                raise ImportDataError(f"{path.name}: no frames (neither /ImageData nor /PZFImageData); "
                                      "not a PYME series file")
    except ImportDataError:
        raise
    except (tables.HDF5ExtError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise ImportDataError(f"{path.name}: not a readable HDF5 series (truncated or damaged?): "
                              f"{exc}") from exc
    return ImportSource(path, kind, len(rows), shape, dtype, metadata, events, _h5_rows=rows)


#: Frames of an ``/ImageData`` array read per chunk when checking a file (bounded memory).
H5_CHECK_CHUNK = 32


def _h5_check_raw(node: Any, name: str) -> tuple[tuple[int, int], np.dtype, list[int]]:
    """Check ``/ImageData`` (a (t, x, y) stack) chunk by chunk; its frame shape, dtype and rows."""
    import tables

    if not isinstance(node, tables.Array) or len(node.shape) != 3:
        raise ImportDataError(f"{name}: /ImageData is not a stack of 2-D frames "
                              f"(shape {getattr(node, 'shape', '?')})")
    if node.shape[0] == 0:
        raise ImportDataError(f"{name}: /ImageData holds no frames")
    if node.dtype.newbyteorder("=") not in FRAME_DTYPES:
        raise ImportDataError(f"{name}: pixels are {node.dtype}; camera frames must be "
                              "uint16 (or uint8 / float32)")
    for start in range(0, node.shape[0], H5_CHECK_CHUNK):  # every frame must be readable
        node[start:start + H5_CHECK_CHUNK]
    return (int(node.shape[1]), int(node.shape[2])), node.dtype.newbyteorder("="), \
        list(range(node.shape[0]))


def _h5_frame_files(source: ImportSource) -> Iterator[bytes]:
    """The frames of a checked ``.h5`` source as PZF files, read one at a time."""
    import tables

    assert source._h5_rows is not None
    sequence = int(source.metadata.get("imageID", 0))
    with tables.open_file(str(source.path), "r") as h5:
        if source.kind == "h5-pzf":
            node = h5.root.PZFImageData
            for row in source._h5_rows:
                yield bytes(node[row])
            return
        node = h5.root.ImageData
        for i in source._h5_rows:  # each row is a frame in PYME's (x, y) orientation
            frame = np.ascontiguousarray(node[i], source.dtype)
            yield encode_frame(frame, frame_num=i, sequence_id=sequence,
                               compression=COMPRESSION_HUFFMAN)


def _h5_pzf_rows(h5: Any, name: str) -> list[int]:
    """The row of ``/PZFImageData`` holding each frame, in frame order."""
    n_rows = h5.root.PZFImageData.nrows
    if not n_rows:
        raise ImportDataError(f"{name}: /PZFImageData holds no frames")
    order = list(range(n_rows))
    if "PZFImageIndex" in h5.root:
        index = h5.root.PZFImageIndex.read()
        index = index[np.argsort(index["FrameNum"], kind="stable")]
        if list(index["FrameNum"]) != order or sorted(index["Position"]) != order:
            raise ImportDataError(f"{name}: /PZFImageIndex does not map frames 0..{n_rows - 1} "
                                  "one to one onto the rows of /PZFImageData")
        order = [int(p) for p in index["Position"]]
    return order  # VLStringAtom rows are bytes, UInt8Atom rows uint8 arrays: bytes() takes both


def _h5_events(h5: Any, name: str) -> list:
    table = h5.root.Events.read()
    if table.dtype.names is None or not {"EventName", "EventDescr", "Time"} <= set(table.dtype.names):
        raise ImportDataError(f"{name}: /Events lacks PYME's EventName / EventDescr / Time columns")
    return [[plain_value(r["EventName"]), plain_value(r["EventDescr"]), float(r["Time"])] for r in table]


def _series_metadata(source: ImportSource, overrides: dict[str, Any]) -> MetaDataHandler:
    md = dict(source.metadata)
    for key, value in overrides.items():
        if value not in (None, ""):
            md[key] = value
    missing = [key for key in REQUIRED if md.get(key) in (None, "")]
    if missing:
        raise ImportDataError(f"{source.path.name}: the file does not give {', '.join(missing)}; "
                              "enter them (in the window) or pass them on the command line")
    for key in (*REQUIRED, "Camera.ReadNoise", "Camera.TrueEMGain"):
        if key in md:
            try:
                md[key] = check_setting(key, md[key])
            except SettingError as exc:
                raise ImportDataError(str(exc)) from exc
    if source.kind != "pcs":
        md.setdefault("imageID", random.randint(1, 2**31 - 1))
        md.update({"DimOrder": "XYCZT", "SizeC": 1, "SizeZ": 1, "SizeT": -1,
                   "Camera.ROIWidth": source.frame_shape[0],
                   "Camera.ROIHeight": source.frame_shape[1], "voxelsize.units": "um"})
        md.setdefault("StartTime", time.time())
    md["Spoolside.ImportedFrom"] = source.path.name
    return MetaDataHandler(md)


def import_series(source: ImportSource, data: DataClient, name: str,
                  overrides: dict[str, Any] | None = None, *,
                  progress: Callable[[int, int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None) -> str:
    """Upload ``source`` as the series ``<name>.pcs``; return its cluster path.

    ``overrides`` fill or replace metadata keys (e.g. the :data:`REQUIRED` ones the file lacks).
    ``progress(done, total)`` is called after each frame; when ``cancelled()`` turns true the
    series is ended there (``events.json`` written), as a stopped acquisition is.
    """
    bare = check_name(name).rstrip("/")
    if bare.endswith(".pcs"):
        bare = bare[:-4]
    series = f"{bare}.pcs"
    md = _series_metadata(source, overrides or {})
    if source.kind != "pcs":
        source.metadata["imageID"] = md["imageID"]
    if data.exists(f"{series}/metadata.json"):
        raise ImportDataError(f"a series {series} already exists on the cluster; choose another name")
    start = time.time()
    data.put_file(f"{series}/metadata.json", md.to_JSON().encode("utf-8"))
    done = 0
    for i, payload in enumerate(source.frames()):
        if cancelled is not None and cancelled():
            break
        data.put_file(f"{series}/frame{i:05d}.pzf", payload)
        done = i + 1
        if progress is not None:
            progress(done, source.n_frames)
    events = source.events if source.events is not None and done == source.n_frames else [
        ["StartAq", "0", start], ["StopAq", str(done), time.time()]]
    data.put_file(f"{series}/events.json", json.dumps(events).encode("utf-8"))
    return series
