"""The ``LatGaussFitFR`` fit-result record (pyme-protocol.md §5.4) and packing into it."""
from __future__ import annotations

import numpy as np

_PARAMS = ["A", "x0", "y0", "sigma", "background", "bx", "by"]
_SLICE = [("start", "<i4"), ("stop", "<i4"), ("step", "<i4")]

#: PYME's ``LatGaussFitFR`` ``FitResults`` row: 108 bytes, little-endian, nested.
FIT_RESULTS_DTYPE = np.dtype([
    ("tIndex", "<i4"),
    ("fitResults", [(name, "<f4") for name in _PARAMS]),
    ("fitError", [(name, "<f4") for name in _PARAMS]),
    ("resultCode", "<i4"),
    ("slicesUsed", [("x", _SLICE), ("y", _SLICE), ("z", _SLICE)]),
    ("subtractedBackground", "<f4"),
    ("nchi2", "<f4"),
])
assert FIT_RESULTS_DTYPE.itemsize == 108

#: ``fitError`` value for a parameter whose error is not estimable (PYME's convention).
NOT_ESTIMABLE = -5000.0

#: ``resultCode`` values (ours; PYME passes its optimiser's status through).
RESULT_OK = 0
RESULT_NOT_CONVERGED = 1
RESULT_SINGULAR = 2


def empty_results(n: int = 0) -> np.ndarray:
    """A zeroed results array of ``n`` rows."""
    return np.zeros(n, FIT_RESULTS_DTYPE)


def pack_results(*, t_index, params: dict, errors: dict, result_code, x_slice, y_slice,
                 subtracted_background, nchi2) -> np.ndarray:
    """Build a results array from per-localisation columns.

    ``params``/``errors`` map the names of ``fitResults`` (``A``, ``x0``, …) to 1-D arrays; missing
    names are 0 (values) or :data:`NOT_ESTIMABLE` (errors).  ``x_slice``/``y_slice`` are
    ``(start, stop)`` pairs of arrays.
    """
    n = len(t_index)
    out = empty_results(n)
    out["tIndex"] = t_index
    for name in _PARAMS:
        out["fitResults"][name] = params.get(name, 0.0)
        out["fitError"][name] = errors.get(name, NOT_ESTIMABLE)
    out["resultCode"] = result_code
    for axis, (start, stop) in (("x", x_slice), ("y", y_slice)):
        out["slicesUsed"][axis]["start"] = start
        out["slicesUsed"][axis]["stop"] = stop
        out["slicesUsed"][axis]["step"] = 1
    out["slicesUsed"]["z"]["start"] = 0
    out["slicesUsed"]["z"]["stop"] = 1
    out["slicesUsed"]["z"]["step"] = 1
    out["subtractedBackground"] = subtracted_background
    out["nchi2"] = nchi2
    return out
