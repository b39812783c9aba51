"""Bytes ⇄ tables and images: PyTables results files, TIFF (tifffile) and CSV.

HDF5 files are opened and built in memory with HDF5's core driver (no temporary files); their
``/MetaData`` is read and written by :mod:`cluster.h5r`, in PYME's layout.
TIFFs are written with rows y and columns x (PYME's image axis 0 is x) and the pixel size twice:
OME-XML (``PhysicalSizeX/Y/Z`` in µm) in the first ImageDescription tag, which PYME and Bio-Formats
read, and ImageJ's description (``unit=um``, ``spacing``, the origin as ``xorigin``/``yorigin`` in
pixels, ``origin_nm = -xorigin * pixel_nm``) in a second one with the resolution tags in pixels per
µm, which ImageJ/Fiji and tifffile read.  tifffile writes either format but not both, so the two
descriptions are added as tags of a plain TIFF.
"""
from __future__ import annotations

import csv
import io
import itertools
from typing import Any, Mapping

import numpy as np
import tables
import tifffile

from cluster import h5r  # also installs the safe unpickler PyTables uses for attributes
from rules.tiff_metadata import tiff_pixel_size_nm

from .datatypes import Image, Table

_counter = itertools.count()


class FormatError(ValueError):
    """Bytes that do not hold what their extension says."""


def _core_name(tag: str) -> str:
    return f"spoolside-{tag}-{next(_counter)}.h5"


def read_results(data: bytes, table: str | None = None) -> dict[str, Table]:
    """The tables of an ``.h5r``/``.hdf`` file by name (just ``table`` if given), with metadata."""
    try:
        h5 = tables.open_file(_core_name("read"), "r", driver="H5FD_CORE",
                              driver_core_image=data, driver_core_backing_store=0)
    except (tables.HDF5ExtError, OSError, ValueError) as exc:
        raise FormatError(f"not an HDF5 file: {exc}") from exc
    with h5:
        metadata = h5r.read_metadata_from(h5)
        found = {}
        for node in h5.walk_nodes("/", "Table"):
            if node._v_pathname.startswith(f"/{h5r.METADATA_GROUP}/"):
                continue
            name = node._v_pathname.strip("/").replace("/", "_")
            if table is not None and name != table:
                continue
            found[name] = Table.from_records(node.read(), metadata=metadata)
        if table is not None and table not in found:
            names = [n._v_pathname.strip("/") for n in h5.walk_nodes("/", "Table")]
            raise FormatError(f"no table {table!r} (tables: {', '.join(names) or 'none'})")
    return found


def write_results(named_tables: Mapping[str, Table], metadata: Mapping[str, Any] | None = None) -> bytes:
    """An HDF5 file (PyTables, zlib 5 + shuffle as PYME) holding ``named_tables`` and metadata."""
    with tables.open_file(_core_name("write"), "w", driver="H5FD_CORE",
                          driver_core_backing_store=0) as h5:
        try:
            h5r.write_metadata_to(h5, dict(metadata or {}))
        except h5r.H5RError as exc:
            raise FormatError(f"metadata cannot be stored: {exc}") from exc
        for name, table in named_tables.items():
            h5.create_table("/", name, obj=_utf8_columns(table.to_records()), filters=h5r.FILTERS)
        h5.flush()
        return h5.get_file_image()


def _utf8_columns(records: np.ndarray) -> np.ndarray:
    """Unicode columns as UTF-8 bytes (HDF5 tables have no unicode type)."""
    if not any(records.dtype[n].kind == "U" for n in records.dtype.names or ()):
        return records
    dtype, columns = [], {}
    for name in records.dtype.names or ():
        column = records[name]
        if column.dtype.kind == "U":
            column = np.char.encode(column, "utf-8")
        dtype.append((name, column.dtype))
        columns[name] = column
    out = np.empty(len(records), dtype=dtype)
    for name, column in columns.items():
        out[name] = column
    return out


# --- TIFF -----------------------------------------------------------------------------------

def write_tiff(image: Image) -> bytes:
    """TIFF of ``image`` (float32 unless integer), carrying pixel size (OME-XML and ImageJ) and origin."""
    data = np.asarray(image.data)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    elif data.dtype.kind == "f" or data.dtype.itemsize > 4 or data.dtype.kind not in "ui":
        data = data.astype(np.float32)
    if data.ndim not in (2, 3):
        raise FormatError(f"TIFF output supports 2-D or 3-D images, not shape {data.shape}")
    if data.dtype.char not in "BHhf":  # what ImageJ reads
        data = data.astype(np.float32)
    stored = np.ascontiguousarray(data.T)  # PYME's (x, y[, z]) → TIFF's ([z,] y, x)
    vx, vy, vz = (float(v) for v in image.voxelsize)
    x0, y0, z0 = (float(v) for v in image.origin)
    axes = "YX" if stored.ndim == 2 else "ZYX"
    ome = tifffile.OmeXml()
    physical: dict[str, Any] = {"PhysicalSizeX": vx / 1e3, "PhysicalSizeXUnit": "µm",
                                "PhysicalSizeY": vy / 1e3, "PhysicalSizeYUnit": "µm"}
    imagej: dict[str, Any] = {"unit": "um", "xorigin": -x0 / vx, "yorigin": -y0 / vy}
    if stored.ndim == 3:
        physical.update(PhysicalSizeZ=vz / 1e3, PhysicalSizeZUnit="µm")
        imagej.update(spacing=vz / 1e3, zorigin=-z0 / vz)
    planes = stored.shape[0] if stored.ndim == 3 else 1
    height, width = stored.shape[-2:]
    ome.addimage(stored.dtype, stored.shape, (planes, 1, 1, height, width, 1), axes=axes, **physical)
    ij_description = tifffile.imagej_description(stored.shape, axes, **imagej)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stored, photometric="minisblack", metadata=None,
                     resolution=(1e3 / vx, 1e3 / vy), resolutionunit="NONE",
                     extratags=[(270, "s", 0, ome.tostring(declaration=True).encode("utf-8"), True),
                                (270, "s", 0, ij_description, True)])
    return buffer.getvalue()


def read_tiff(data: bytes) -> Image:
    """An :class:`Image` of a TIFF (rows = y), with pixel size from OME-XML, else ImageJ or
    resolution tags."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            array = tif.asarray()
            imagej = tif.imagej_metadata or {}
            vx, vy, vz = tiff_pixel_size_nm(tif)
    except (tifffile.TiffFileError, ValueError, IndexError) as exc:
        raise FormatError(f"not a readable TIFF: {exc}") from exc
    array = np.squeeze(array)
    if array.ndim not in (2, 3):
        raise FormatError(f"TIFF of shape {array.shape}: only 2-D images and z stacks are supported")
    pixels = array.T  # TIFF's ([z,] y, x) → PYME's (x, y[, z])
    metadata: dict[str, Any] = {}
    if vx is None or vy is None:
        vx = vy = 1.0
        metadata["voxelsize.unknown"] = True
    vz = vz or vx
    origin = (-float(imagej.get("xorigin", 0.0)) * vx, -float(imagej.get("yorigin", 0.0)) * vy,
              -float(imagej.get("zorigin", 0.0)) * vz)
    metadata.update({"voxelsize.x": vx / 1e3, "voxelsize.y": vy / 1e3, "voxelsize.z": vz / 1e3,
                     "voxelsize.units": "um"})
    return Image(pixels, (vx, vy, vz), origin, metadata)


# --- CSV ------------------------------------------------------------------------------------

def write_csv(table: Table) -> bytes:
    """CSV with a header row of column names (real columns; aliases are not repeated)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = table.keys()
    writer.writerow(names)
    columns = []
    for name in names:
        column = table.columns[name]
        if column.dtype.kind == "S":
            column = np.char.decode(column, "utf-8", "replace")
        columns.append(column.tolist())
    writer.writerows(zip(*columns))
    return buffer.getvalue().encode("utf-8")


def read_csv(data: bytes) -> Table:
    """A table of a CSV with a header row; numeric columns become float/int arrays."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"CSV is not UTF-8 text: {exc}") from exc
    rows = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].lstrip().startswith("#")]
    if not rows:
        raise FormatError("CSV has no header row")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if any(len(r) != len(header) for r in body):
        raise FormatError("CSV rows do not all have as many fields as the header")
    columns = {}
    for i, name in enumerate(header):
        values = [r[i].strip() for r in body]
        columns[name] = _parse_column(values)
    return Table(columns)


def _parse_column(values: list[str]) -> np.ndarray:
    for kind in (int, float):
        try:
            return np.array([kind(v) for v in values], dtype=kind)
        except ValueError:
            continue
    return np.array(values, dtype=str)
