"""Rendered TIFFs carry the pixel size for PYME/Bio-Formats (OME-XML) and for ImageJ/Fiji (ImageJ
description and resolution tags); each is read back on its own."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from cluster.recipes.datatypes import Image
from cluster.recipes.fileio import read_tiff, write_tiff
from rules.tiff_metadata import imagej_pixel_size_nm, ome_pixel_size_nm


@pytest.mark.parametrize("shape", [(40, 30), (40, 30, 4)])
def test_rendered_tiff_has_ome_xml_and_imagej_pixel_sizes(shape):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    raw = write_tiff(Image(data, (12.5, 20.0, 50.0), (-50.0, 100.0, 0.0)))
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        assert tif.is_ome and tif.is_imagej
        ome = ome_pixel_size_nm(tif.ome_metadata)
        assert ome[:2] == pytest.approx((12.5, 20.0))
        assert ome[2] == (pytest.approx(50.0) if len(shape) == 3 else None)
        imagej = tif.imagej_metadata
        assert imagej["unit"] == "um" and imagej["images"] == (shape[2] if len(shape) == 3 else 1)
        tags = tif.pages[0].tags
        by_imagej = imagej_pixel_size_nm((tags["XResolution"].value, tags["YResolution"].value),
                                         int(tags["ResolutionUnit"].value), imagej)
        assert by_imagej == pytest.approx((12.5, 20.0))
        assert imagej["xorigin"] == pytest.approx(4.0)
        stack = tif.asarray()
    np.testing.assert_array_equal(stack, data.T)
    image = read_tiff(raw)
    np.testing.assert_array_equal(image.data, data)
    assert image.voxelsize == pytest.approx((12.5, 20.0, 50.0 if len(shape) == 3 else 12.5))
    assert image.origin[:2] == pytest.approx((-50.0, 100.0))


def test_ome_pixel_size_units_and_bad_xml():
    xml = ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image><Pixels '
           'PhysicalSizeX="0.1" PhysicalSizeY="100" PhysicalSizeYUnit="nm"/></Image></OME>')
    assert ome_pixel_size_nm(xml) == (pytest.approx(100.0), pytest.approx(100.0), None)
    assert ome_pixel_size_nm("<not xml") == (None, None, None)
    assert ome_pixel_size_nm(None) == (None, None, None)
