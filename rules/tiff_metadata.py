"""Pixel size from a TIFF's own metadata: OME-XML (``PhysicalSize*`` of the first image) and
ImageJ's description (``unit``, ``spacing``) with the resolution tags, as tifffile exposes them.

Shared by the recipe file reader (``cluster.recipes.fileio``) and the importer (``rules.importer``).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, Mapping

#: Length units to nanometres (OME's unit symbols and ImageJ's spellings).
UNITS_NM = {"nm": 1.0, "um": 1e3, "µm": 1e3, "\u03bcm": 1e3, "micron": 1e3, "microns": 1e3,
            "mm": 1e6, "cm": 1e7, "m": 1e9, "pm": 1e-3, "Å": 0.1}


def ome_pixel_size_nm(ome_xml: str | None) -> tuple[float | None, float | None, float | None]:
    """``(x, y, z)`` pixel size in nm of the first OME image (None where absent or unreadable)."""
    if not ome_xml:
        return None, None, None
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None, None, None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None, None, None
    sizes = []
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        unit_nm = UNITS_NM.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        try:
            size = float(value) * unit_nm if value is not None and unit_nm else None
        except ValueError:
            size = None
        sizes.append(size if size is not None and size > 0 else None)
    return sizes[0], sizes[1], sizes[2]


def imagej_pixel_size_nm(resolution: tuple[Any, Any] | None, resolution_unit: int | None,
                         imagej: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """``(x, y)`` pixel size in nm from X/YResolution (pixels per unit) and ImageJ's ``unit``
    (else the ResolutionUnit tag: 2 inch, 3 cm)."""
    if resolution is None:
        return None, None
    per_unit = []
    for value in resolution:
        per_unit.append(value[0] / value[1] if isinstance(value, tuple) and value[1] else
                        float(value) if not isinstance(value, tuple) else 0.0)
    unit_nm = None
    if imagej and imagej.get("unit"):
        unit_nm = UNITS_NM.get(str(imagej["unit"]).strip().lower().replace("\\u00b5", "µ"))
    if unit_nm is None and resolution_unit is not None:
        unit_nm = {2: 2.54e7, 3: 1e7}.get(int(resolution_unit))
    if unit_nm is None or not all(r > 0 for r in per_unit):
        return None, None
    return unit_nm / per_unit[0], unit_nm / per_unit[1]


def tiff_pixel_size_nm(tif) -> tuple[float | None, float | None, float | None]:
    """``(x, y, z)`` pixel size in nm of an open ``tifffile.TiffFile``: OME-XML first, else ImageJ's
    ``unit`` (z from ``spacing``) or the ResolutionUnit tag with the resolution tags."""
    x, y, z = ome_pixel_size_nm(tif.ome_metadata if tif.is_ome else None)
    if x is not None and y is not None:
        return x, y, z
    imagej = tif.imagej_metadata or {}
    tags = tif.pages[0].tags
    resolution = None
    if "XResolution" in tags:
        resolution = (tags["XResolution"].value,
                      (tags["YResolution"] if "YResolution" in tags else tags["XResolution"]).value)
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
    x, y = imagej_pixel_size_nm(resolution, unit, imagej)
    unit_nm = UNITS_NM.get(str(imagej.get("unit", "um")).strip().lower(), 1e3)
    z = float(imagej["spacing"]) * unit_nm if "spacing" in imagej else None
    return x, y, z
