"""``measurement.*``: per-region measurements of labelled images."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..datatypes import Table
from .base import Param, RecipeModule


class Measure2D(RecipeModule):
    """Region properties of each label (regionprops-like, numpy/scipy.ndimage).

    Columns: ``label``, ``area`` (pixels), ``area_nm2``, ``x``/``y`` (centroid in nm, pixel centres
    at ``origin + (i + 0.5) * voxel``), ``centroid_x``/``centroid_y`` (pixels), ``bbox_x0``,
    ``bbox_y0``, ``bbox_x1``, ``bbox_y1`` (pixels, half-open), ``major_axis_length``,
    ``minor_axis_length`` (pixels, 4·√eigenvalue as skimage), ``orientation`` (rad from the x axis),
    ``eccentricity``, ``equivalent_diameter``, ``extent``; with an intensity image also
    ``sum_intensity``, ``mean_intensity``, ``min_intensity``, ``max_intensity`` and the
    intensity-weighted centroid ``x_weighted``/``y_weighted`` (nm).
    """

    name = "measurement.Measure2D"
    params = (
        Param("inputLabels", "str", "labels", "input"),
        Param("inputIntensity", "str", "data", "input"),
        Param("outputName", "str", "measurements", "output"),
        Param("measureContour", "bool", True),
    )

    def run(self, namespace):
        labelled = self.image(namespace, "inputLabels")
        labels = np.asarray(labelled.data)
        if labels.dtype.kind not in "iub":
            raise self.error(f"inputLabels {self.p['inputLabels']!r} must be an integer label image, "
                             f"not {labels.dtype}")
        labels = np.squeeze(labels).astype(np.int64)
        if labels.ndim != 2:
            raise self.error(f"inputLabels must be a 2-D image, got shape {labels.shape}")
        intensity = None
        if self.p["inputIntensity"]:
            intensity = np.squeeze(np.asarray(self.image(namespace, "inputIntensity").data, dtype=float))
            if intensity.shape != labels.shape:
                raise self.error(f"intensity image shape {intensity.shape} differs from the labels' "
                                 f"{labels.shape}")
        n = int(labels.max(initial=0))
        ids = np.arange(1, n + 1)
        flat = labels.ravel()
        ii, jj = np.indices(labels.shape)
        ii, jj = ii.ravel().astype(float), jj.ravel().astype(float)

        def sums(weights):
            return np.bincount(flat, weights=weights, minlength=n + 1)[1:]

        area = sums(None).astype(float)
        present = area > 0
        ids, area = ids[present], area[present]
        pick = lambda a: a[present]  # noqa: E731
        with np.errstate(invalid="ignore", divide="ignore"):
            ci = pick(sums(ii)) / area
            cj = pick(sums(jj)) / area
            mu20 = pick(sums(ii * ii)) / area - ci ** 2
            mu02 = pick(sums(jj * jj)) / area - cj ** 2
            mu11 = pick(sums(ii * jj)) / area - ci * cj
            # second moments of a pixel include its own extent (1/12), as skimage does
            mu20, mu02 = mu20 + 1 / 12, mu02 + 1 / 12
            common = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11 ** 2)
            lam1 = (mu20 + mu02) / 2 + common
            lam2 = np.maximum((mu20 + mu02) / 2 - common, 0.0)
            major, minor = 4 * np.sqrt(lam1), 4 * np.sqrt(lam2)
            eccentricity = np.where(lam1 > 0, np.sqrt(np.clip(1 - lam2 / lam1, 0, 1)), 0.0)
            orientation = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)
        slices = ndimage.find_objects(labels, max_label=n)
        bbox = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in
                         (slices[i - 1] for i in ids)], dtype=np.int64).reshape(-1, 4)
        vx, vy = labelled.voxelsize[0], labelled.voxelsize[1]
        columns = {
            "label": ids.astype(np.int32),
            "area": area.astype(np.int64),
            "area_nm2": area * vx * vy,
            "x": labelled.pixel_centres_nm(0, ci),
            "y": labelled.pixel_centres_nm(1, cj),
            "centroid_x": ci, "centroid_y": cj,
            "bbox_x0": bbox[:, 0], "bbox_y0": bbox[:, 1], "bbox_x1": bbox[:, 2], "bbox_y1": bbox[:, 3],
            "major_axis_length": major, "minor_axis_length": minor,
            "orientation": orientation, "eccentricity": eccentricity,
            "equivalent_diameter": np.sqrt(4 * area / np.pi),
            "extent": area / np.maximum((bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1]), 1),
        }
        if intensity is not None:
            total = pick(sums(intensity.ravel()))
            with np.errstate(invalid="ignore", divide="ignore"):
                columns["sum_intensity"] = total
                columns["mean_intensity"] = total / area
                columns["min_intensity"] = np.asarray(
                    ndimage.minimum(intensity, labels, ids) if len(ids) else [], float)
                columns["max_intensity"] = np.asarray(
                    ndimage.maximum(intensity, labels, ids) if len(ids) else [], float)
                weights = intensity.ravel()
                columns["x_weighted"] = labelled.pixel_centres_nm(0, pick(sums(ii * weights)) / total)
                columns["y_weighted"] = labelled.pixel_centres_nm(1, pick(sums(jj * weights)) / total)
        metadata = dict(labelled.metadata)
        self.put(namespace, "outputName", Table(columns, metadata=metadata))
