"""``localisations.*``: derived localisation columns, density rendering, DBSCAN clustering."""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.special import erf

from ..datatypes import Image, Table
from .base import Param, RecipeModule

logger = logging.getLogger(__name__)

#: Localisation columns derived from ``LatGaussFitFR``-style flattened fit results.
DERIVED = {
    "x": "fitResults_x0", "y": "fitResults_y0", "A": "fitResults_A",
    "sig": "fitResults_sigma", "bg": "fitResults_background",
    "error_x": "fitError_x0", "error_y": "fitError_y0", "error_A": "fitError_A",
    "error_sig": "fitError_sigma", "error_bg": "fitError_background", "t": "tIndex",
}


class AddPipelineDerivedVars(RecipeModule):
    """Fit results → localisations: x, y, A, sig, bg, error_*, t (and z = 0 when absent), in nm."""

    name = "localisations.AddPipelineDerivedVars"
    params = (
        Param("inputFitResults", "str", "FitResults", "input"),
        Param("inputEvents", "str", "", "input"),
        Param("pixelSizeNM", "float", 1.0),
        Param("foreshortening", "float", 1.0),
        Param("outputLocalizations", "str", "Localizations", "output"),
        Param("outputEventMaps", "str", "event_maps"),
    )

    def run(self, namespace):
        fits = self.table(namespace, "inputFitResults")
        if self.p["inputEvents"]:
            self.table(namespace, "inputEvents")  # checked, not used: no event-derived maps yet
        new = {}
        for column, source in DERIVED.items():
            if source in fits.columns:
                new[column] = np.asarray(fits.columns[source], dtype=float)
            elif column in fits.columns:
                new[column] = np.asarray(fits.columns[column], dtype=float)
        for column in ("x", "y", "error_x", "error_y", "sig", "error_sig"):
            if column in new and self.p["pixelSizeNM"] != 1.0:
                new[column] = new[column] * self.p["pixelSizeNM"]
        if "z" in fits:
            new["z"] = np.asarray(fits["z"], dtype=float) * self.p["foreshortening"]
        else:
            new["z"] = np.zeros(len(fits))
        missing = [c for c in ("x", "y") if c not in new]
        if missing:
            raise self.error(f"input {self.p['inputFitResults']!r} has no {missing[0]!r} "
                             f"(nor {DERIVED[missing[0]]!r}) column (columns: {', '.join(fits.names())})")
        self.put(namespace, "outputLocalizations", fits.with_columns(new))


RENDERERS = ("3D Gaussian", "3D Histogram", "3D Triangularisation", "Density Fit", "Gaussian",
             "Histogram", "Jittered Triangulation", "Jittered Triangulation - weighted",
             "Log Likelihood", "QuadTree", "Voronoi")
SUPPORTED_RENDERERS = ("Gaussian", "Histogram")
MAX_PIXELS = 200_000_000
MAX_MARGIN_NM = 1000.0
_CHUNK = 4096


class DensityMapping(RecipeModule):
    """Render localisations to an image (Histogram, or Gaussian: one unit-mass Gaussian each).

    Pixel values are localisations per pixel (each localisation adds a total of 1). Gaussian σ is
    ``jitterScale`` × the ``jitterVariable`` column (e.g. ``error_x``) or × the number it holds;
    a named column that is absent falls back to σ = one pixel, with a warning. Bounds: ``estimate``
    (data min/max, widened for Gaussians by 3 × their 95th-percentile σ, snapped out to the pixel
    grid), ``metadata`` (camera ROI × voxel size) or
    ``manual`` (``manualXYBounds`` = [x0, y0, x1, y1] nm).
    """

    name = "localisations.DensityMapping"
    params = (
        Param("inputLocalizations", "str", "localizations", "input"),
        Param("outputImage", "str", "output", "output"),
        Param("renderingModule", "choice", RENDERERS[0], choices=RENDERERS),
        Param("pixelSize", "float", 5.0),
        Param("jitterVariable", "str", "1.0"),
        Param("jitterScale", "float", 1.0),
        Param("jitterVariableZ", "str", "1.0"),
        Param("jitterScaleZ", "float", 1.0),
        Param("MCProbability", "float", 1.0),
        Param("numSamples", "int", 10),
        Param("colours", "strs", []),
        Param("zBoundsMode", "str", "manual"),
        Param("zBounds", "floats", [-500.0, 500.0], length=2),
        Param("zSliceThickness", "float", 50.0),
        Param("softRender", "bool", True),
        Param("xyBoundsMode", "choice", "estimate", choices=("estimate", "inherit", "metadata", "manual")),
        Param("manualXYBounds", "floats", [0.0, 0.0, 5000.0, 5000.0], length=4),
    )

    def validate(self):
        mode = self.p["renderingModule"]
        if mode not in SUPPORTED_RENDERERS:
            hint = " (PYME's default when renderingModule is not given)" if mode == RENDERERS[0] else ""
            raise self.error(f"renderingModule {mode!r}{hint} is not supported; "
                             f"use one of {', '.join(SUPPORTED_RENDERERS)}")
        if self.p["xyBoundsMode"] == "inherit":
            raise self.error("xyBoundsMode 'inherit' is not supported; use estimate, metadata or manual")
        if self.p["pixelSize"] <= 0:
            raise self.error(f"pixelSize must be > 0 nm, got {self.p['pixelSize']}")
        x0, y0, x1, y1 = self.p["manualXYBounds"]
        if self.p["xyBoundsMode"] == "manual" and not (x1 > x0 and y1 > y0):
            raise self.error(f"manualXYBounds {self.p['manualXYBounds']} must be [x0, y0, x1, y1] "
                             "with x1 > x0 and y1 > y0")

    def run(self, namespace):
        table = self.table(namespace, "inputLocalizations")
        for column in ("x", "y"):
            if column not in table:
                raise self.error(f"input {self.p['inputLocalizations']!r} has no {column!r} column "
                                 f"(columns: {', '.join(table.names())})")
        x = np.asarray(table["x"], dtype=float)
        y = np.asarray(table["y"], dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        ps = self.p["pixelSize"]
        sigma = self._sigma(table, ok, ps) if self.p["renderingModule"] == "Gaussian" else None
        margin = 0.0
        if sigma is not None and len(sigma):
            margin = min(3.0 * float(np.percentile(sigma, 95)), MAX_MARGIN_NM)
        x0, y0, x1, y1 = self._bounds(table, x, y, ps, margin)
        nx, ny = max(1, int(round((x1 - x0) / ps))), max(1, int(round((y1 - y0) / ps)))
        if nx * ny > MAX_PIXELS:
            raise self.error(f"image of {nx}×{ny} pixels is too large; increase pixelSize ({ps} nm) "
                             "or narrow the bounds")
        if self.p["renderingModule"] == "Histogram":
            data = _histogram(x, y, x0, y0, ps, nx, ny)
        else:
            data = _gaussian(x, y, sigma, x0, y0, ps, nx, ny)
        metadata = {k: v for k, v in table.metadata.items() if not k.startswith("voxelsize.")}
        metadata.update({
            "voxelsize.x": ps / 1e3, "voxelsize.y": ps / 1e3, "voxelsize.z": ps / 1e3,
            "voxelsize.units": "um", "Rendering.Method": self.p["renderingModule"],
            "Rendering.PixelSize": ps, "Rendering.NumLocalizations": int(len(x)),
            "Rendering.Bounds": [x0, y0, x0 + nx * ps, y0 + ny * ps],
        })
        self.put(namespace, "outputImage", Image(data.astype(np.float32), (ps, ps, ps),
                                                 (x0, y0, 0.0), metadata))

    def _bounds(self, table: Table, x, y, ps, margin):
        mode = self.p["xyBoundsMode"]
        if mode == "manual":
            return tuple(self.p["manualXYBounds"])
        if mode == "metadata":
            md = table.metadata
            needed = ("Camera.ROIWidth", "Camera.ROIHeight", "voxelsize.x", "voxelsize.y")
            missing = [k for k in needed if k not in md]
            if missing:
                raise self.error(f"xyBoundsMode 'metadata' needs metadata {missing[0]!r}, which "
                                 f"{self.p['inputLocalizations']!r} lacks")
            scale = 1.0 if str(md.get("voxelsize.units", "um")) == "nm" else 1e3
            return (0.0, 0.0, float(md["Camera.ROIWidth"]) * float(md["voxelsize.x"]) * scale,
                    float(md["Camera.ROIHeight"]) * float(md["voxelsize.y"]) * scale)
        if len(x) == 0:
            raise self.error(f"nothing to render: {self.p['inputLocalizations']!r} has no "
                             "localisations (use xyBoundsMode manual or metadata for empty images)")
        return (ps * math.floor((x.min() - margin) / ps), ps * math.floor((y.min() - margin) / ps),
                ps * (math.floor((x.max() + margin) / ps) + 1),
                ps * (math.floor((y.max() + margin) / ps) + 1))

    def _sigma(self, table: Table, ok, ps):
        variable = self.p["jitterVariable"].strip()
        scale = self.p["jitterScale"]
        if variable in table:
            sigma = np.asarray(table[variable], dtype=float)[ok] * scale
        else:
            try:
                sigma = np.full(int(ok.sum()), float(variable) * scale)
            except ValueError:
                logger.warning("%s: no column %r; rendering with a fixed σ of one pixel (%g nm)",
                               self.label(), variable, ps)
                sigma = np.full(int(ok.sum()), ps)
        bad = ~np.isfinite(sigma) | (sigma <= 0)
        sigma[bad] = 1e-3 * ps  # not estimable → all mass in the localisation's own pixel
        return sigma


def _histogram(x, y, x0, y0, ps, nx, ny):
    ix = np.floor((x - x0) / ps).astype(np.int64)
    iy = np.floor((y - y0) / ps).astype(np.int64)
    keep = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    counts = np.bincount(ix[keep] * ny + iy[keep], minlength=nx * ny)
    return counts.reshape(nx, ny).astype(np.float32)


def _gaussian(x, y, sigma, x0, y0, ps, nx, ny):
    """Sum of pixel-integrated unit-mass Gaussians, vectorised over chunks sorted by σ."""
    image = np.zeros(nx * ny)
    order = np.argsort(sigma)
    u_all, v_all, s_all = (x[order] - x0) / ps, (y[order] - y0) / ps, sigma[order] / ps
    for start in range(0, len(order), _CHUNK):
        u, v, s = (a[start:start + _CHUNK] for a in (u_all, v_all, s_all))
        radius = min(int(math.ceil(4.0 * s.max())) + 1, max(nx, ny))
        offsets = np.arange(-radius, radius + 1)
        ix = np.floor(u).astype(np.int64)[:, None] + offsets
        iy = np.floor(v).astype(np.int64)[:, None] + offsets
        wx = _pixel_weights(ix, u, s)
        wy = _pixel_weights(iy, v, s)
        weights = wx[:, :, None] * wy[:, None, :]
        inside = ((ix >= 0) & (ix < nx))[:, :, None] & ((iy >= 0) & (iy < ny))[:, None, :]
        flat = ix[:, :, None] * ny + iy[:, None, :]
        image += np.bincount(flat[inside], weights=weights[inside], minlength=nx * ny)
    return image.reshape(nx, ny)


def _pixel_weights(index, centre, sigma):
    scale = 1.0 / (math.sqrt(2.0) * sigma[:, None])
    return 0.5 * (erf((index + 1 - centre[:, None]) * scale) - erf((index - centre[:, None]) * scale))


class DBSCANClustering(RecipeModule):
    """DBSCAN on chosen columns (KD-tree neighbours): clump IDs 1, 2, ...; noise points get 0."""

    name = "localisations.DBSCANClustering"
    params = (
        Param("inputName", "str", "filtered", "input"),
        Param("columns", "strs", ["x", "y", "z"]),
        Param("searchRadius", "float", 10.0),
        Param("minClumpSize", "int", 1),
        Param("multithreaded", "bool", False),
        Param("numberOfJobs", "int", -1),
        Param("clumpColumnName", "str", "dbscanClumpID"),
        Param("outputName", "str", "dbscanClustered", "output"),
    )

    def validate(self):
        if self.p["searchRadius"] <= 0:
            raise self.error(f"searchRadius must be > 0, got {self.p['searchRadius']}")
        if not self.p["columns"]:
            raise self.error("columns must name at least one column")

    def run(self, namespace):
        table = self.table(namespace, "inputName")
        missing = [c for c in self.p["columns"] if c not in table]
        if missing:
            raise self.error(f"input {self.p['inputName']!r} has no column {missing[0]!r} "
                             f"(columns: {', '.join(table.names())})")
        n = len(table)
        points = np.column_stack([np.asarray(table[c], dtype=float) for c in self.p["columns"]]) \
            if n else np.zeros((0, len(self.p["columns"])))
        ids = np.zeros(n, dtype=np.int32)
        if n:
            tree = cKDTree(points)
            pairs = tree.query_pairs(self.p["searchRadius"], output_type="ndarray")
            neighbours = np.bincount(pairs.ravel(), minlength=n) + 1  # sklearn counts the point itself
            core = neighbours >= self.p["minClumpSize"]
            both = core[pairs[:, 0]] & core[pairs[:, 1]]
            cp = pairs[both]
            graph = coo_matrix((np.ones(len(cp)), (cp[:, 0], cp[:, 1])), shape=(n, n))
            _, component = connected_components(graph, directed=False)
            # number core-point components 1..k in order of first appearance
            core_idx = np.flatnonzero(core)
            _, first = np.unique(component[core_idx], return_index=True)
            label_of = {component[core_idx[i]]: k + 1 for k, i in enumerate(np.sort(first))}
            ids[core_idx] = [label_of[c] for c in component[core_idx]]
            # border points join the clump of a neighbouring core point
            for a, b in pairs[core[pairs[:, 0]] ^ core[pairs[:, 1]]]:
                border, anchor = (b, a) if core[a] else (a, b)
                if ids[border] == 0:
                    ids[border] = ids[anchor]
        self.put(namespace, "outputName", table.with_columns({self.p["clumpColumnName"]: ids}))
