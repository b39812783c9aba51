"""``processing.*``: thresholding and connected-component labelling."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import Param, RecipeModule


class SimpleThreshold(RecipeModule):
    """Mask (uint8 0/1) of pixels strictly above ``threshold`` (in the image's own units)."""

    name = "processing.SimpleThreshold"
    params = (
        Param("inputName", "str", "input", "input"),
        Param("outputName", "str", "mask", "output"),
        Param("threshold", "float", 0.5),
    )

    def run(self, namespace):
        image = self.image(namespace, "inputName")
        mask = (np.asarray(image.data) > self.p["threshold"]).astype(np.uint8)
        self.put(namespace, "outputName", image.derived(mask))


class Label(RecipeModule):
    """Label connected regions of a mask (4-connected in 2-D); drop regions under ``minRegionPixels``."""

    name = "processing.Label"
    params = (
        Param("inputName", "str", "input", "input"),
        Param("outputName", "str", "labeled", "output"),
        Param("minRegionPixels", "int", 10),
    )

    def run(self, namespace):
        image = self.image(namespace, "inputName")
        labels, count = ndimage.label(np.asarray(image.data) > 0)
        if count:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            keep = sizes >= self.p["minRegionPixels"]
            keep[0] = False
            relabel = np.zeros(count + 1, dtype=np.int32)
            relabel[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            labels = relabel[labels]
        self.put(namespace, "outputName", image.derived(labels.astype(np.int32)))
