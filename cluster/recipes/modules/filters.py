"""``filters.*``: image filters."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import Param, RecipeModule


class GaussianFilter(RecipeModule):
    """Gaussian blur with σ in pixels per axis; ``dimensionality`` says which axes are filtered."""

    name = "filters.GaussianFilter"
    params = (
        Param("inputName", "str", "input", "input"),
        Param("outputName", "str", "filtered_image", "output"),
        Param("sigmaX", "float", 1.0),
        Param("sigmaY", "float", 1.0),
        Param("sigmaZ", "float", 1.0),
        Param("sigmaT", "float", 0.0),
        Param("dimensionality", "choice", "XY", choices=("XY", "XYZ", "XYZT")),
        Param("processFramesIndividually", "bool", True),
    )

    def validate(self):
        for name in ("sigmaX", "sigmaY", "sigmaZ", "sigmaT"):
            if self.p[name] < 0:
                raise self.error(f"{name} must be >= 0 pixels, got {self.p[name]}")

    def run(self, namespace):
        image = self.image(namespace, "inputName")
        data = np.asarray(image.data, dtype=np.float32)
        active = {"XY": 2, "XYZ": 3, "XYZT": 4}[self.p["dimensionality"]]
        wanted = [self.p["sigmaX"], self.p["sigmaY"], self.p["sigmaZ"], self.p["sigmaT"]]
        sigma = [wanted[i] if i < active else 0.0 for i in range(data.ndim)]
        filtered = ndimage.gaussian_filter(data, sigma=sigma, mode="constant", cval=0.0)
        self.put(namespace, "outputName", image.derived(filtered))
