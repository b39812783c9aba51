"""The one schema of series and analysis metadata keys: type, unit and allowed range.

The metadata panel checks what is typed against it, the chain check checks a localisation step's
settings against it, and the workers refuse a task whose metadata breaks it — all with the same
sentence (:func:`setting_problem`). The bounds keep every setting within what a worker can do
without allocating gigabytes (an ``Analysis.ROISize`` of a million is refused before any array
exists).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .metadata import MetadataLike


@dataclass(frozen=True)
class Setting:
    """Type, unit and range of one metadata key.

    ``type`` is ``float``, ``int``, ``bool``, ``str``, ``range`` (two whole numbers, low ≤ high)
    or ``list``; ``span`` bounds ``high - low`` of a range.
    """

    type: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple = ()
    span: int | None = None


#: Fit modules the workers run.
FIT_MODULES = ("LatGaussFitFR",)

SETTINGS: dict[str, Setting] = {
    "Analysis.FitModule": Setting("str", choices=FIT_MODULES),
    # 1.0 = 5 σ of the PSF-matched filter's noise (see docs/ARCHITECTURE.md)
    "Analysis.DetectionThreshold": Setting("float", "× 5 σ (filtered)", 0.0, 1000.0, True),
    "Analysis.StartAt": Setting("int", "frame", 0),
    "Analysis.BGRange": Setting("range", "frames", -100000, 100000, span=1000),
    "Analysis.NumBGFrames": Setting("int", "frames", 0, 1000),
    "Analysis.SNRThreshold": Setting("bool"),
    "Analysis.subtractBackground": Setting("bool"),
    "Analysis.FitBackground": Setting("bool"),
    "Analysis.TrackFiducials": Setting("bool"),
    "Analysis.PCTBackground": Setting("float", "fraction", 0.0, 1.0),
    "Analysis.ROISize": Setting("int", "px (half size)", 2, 50),
    "Analysis.PSFSigmaGuess": Setting("float", "nm", 0.0, 10000.0, True),
    "Analysis.DebounceRadius": Setting("float", "px", 0.0, 1000.0),
    "Camera.ADOffset": Setting("float", "ADU"),
    "Camera.ElectronsPerCount": Setting("float", "e⁻/ADU", 0.0, None, True),
    "Camera.TrueEMGain": Setting("float", "", 0.0, None, True),
    "Camera.EMGain": Setting("float", "register", 0.0),
    "Camera.ReadNoise": Setting("float", "e⁻", 0.0),
    "Camera.NoiseFactor": Setting("float", "", 0.0, None, True),
    "Camera.ROIWidth": Setting("int", "px", 1, 65536),
    "Camera.ROIHeight": Setting("int", "px", 1, 65536),
    "Camera.ROIOriginX": Setting("int", "px", 0),
    "Camera.ROIOriginY": Setting("int", "px", 0),
    "Camera.ROIPosX": Setting("int", "px, 1-based", 1),
    "Camera.ROIPosY": Setting("int", "px, 1-based", 1),
    # sCMOS maps: a cluster path/URI or a local file (.npy, .tif, .h5); see cluster/localisation
    "Camera.DarkMapID": Setting("str", "map: offset, ADU"),
    "Camera.VarianceMapID": Setting("str", "map: read-noise variance, e⁻²"),
    "Camera.FlatfieldMapID": Setting("str", "map: flat-field factor"),
    "Camera.IntegrationTime": Setting("float", "s", 0.0, None, True),
    "Camera.Name": Setting("str"),
    "voxelsize.x": Setting("float", "µm", 0.0, 1000.0, True),
    "voxelsize.y": Setting("float", "µm", 0.0, 1000.0, True),
    "voxelsize.z": Setting("float", "µm", 0.0, None, True),
    "voxelsize.units": Setting("str"),
    "EstimatedLaserOnFrameNo": Setting("int", "frame", 0),
    "StartTime": Setting("float", "s (epoch)"),
    "SizeC": Setting("int"),
    "SizeT": Setting("int"),
    "SizeZ": Setting("int"),
}


#: The keys a localisation worker reads (it refuses a task only for these).
WORKER_KEYS = frozenset({
    "Analysis.FitModule", "Analysis.DetectionThreshold", "Analysis.StartAt", "Analysis.BGRange",
    "Analysis.NumBGFrames", "Analysis.subtractBackground", "Analysis.PCTBackground",
    "Analysis.ROISize", "Analysis.PSFSigmaGuess", "Camera.ADOffset", "Camera.ElectronsPerCount",
    "Camera.TrueEMGain", "Camera.ReadNoise", "Camera.NoiseFactor", "voxelsize.x", "voxelsize.y",
    "EstimatedLaserOnFrameNo"})


class SettingError(ValueError):
    """A value that does not fit its key's type or range; the message names the key."""


def setting_for(key: str, value: Any = None) -> Setting:
    """The setting of ``key``; unknown keys get a type inferred from their current value."""
    if key in SETTINGS:
        return SETTINGS[key]
    if isinstance(value, bool):
        return Setting("bool")
    if isinstance(value, int):
        return Setting("int")
    if isinstance(value, float):
        return Setting("float")
    if isinstance(value, (list, dict)):
        return Setting("list")
    return Setting("str")


def format_value(value: Any) -> str:
    """A value as the text the panel shows (JSON for lists, ``true``/``false``)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(key: str, value: float, spec: Setting) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"{key} must be finite")
    if spec.minimum is not None and (value < spec.minimum
                                     or (spec.exclusive_minimum and value == spec.minimum)):
        relation = "above" if spec.exclusive_minimum else "at least"
        raise SettingError(f"{key} must be {relation} {spec.minimum:g}, not {value:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise SettingError(f"{key} must be at most {spec.maximum:g}, not {value:g}")


def check_setting(key: str, value: Any, spec: Setting | None = None) -> Any:
    """``value`` (already typed, e.g. from JSON) checked against ``key``'s setting (or ``spec``,
    for schemas other than the metadata's) and returned (ints accepted for floats). Raises
    :class:`SettingError` with the sentence every layer shows."""
    spec = spec or setting_for(key, value)
    if spec.type == "str":
        if not isinstance(value, str):
            raise SettingError(f"{key} must be text, not {value!r}")
        if spec.choices and value not in spec.choices:
            raise SettingError(f"{key} must be one of {', '.join(spec.choices)}, not {value!r}")
        return value
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise SettingError(f"{key} must be true or false, not {value!r}")
        return value
    if spec.type == "range":
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise SettingError(f"{key} must be two whole numbers such as [-30, 0], not {value!r}")
        low, high = value
        if low > high:
            raise SettingError(f"{key}: the first frame offset must not be above the second")
        for v in value:
            _number(key, v, spec)
        if spec.span is not None and high - low > spec.span:
            raise SettingError(f"{key} may span at most {spec.span} frames, not {high - low}")
        return list(value)
    if spec.type == "list":
        if not isinstance(value, (list, dict)):
            raise SettingError(f"{key} must be a list, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a whole number" if spec.type == "int" else "a number"
        raise SettingError(f"{key} must be {kind}, not {value!r}")
    if spec.type == "int" and not isinstance(value, int):
        if not float(value).is_integer():
            raise SettingError(f"{key} must be a whole number, not {value!r}")
        value = int(value)
    _number(key, value, spec)
    return value


def parse_setting(key: str, text: str, current: Any = None) -> Any:
    """The value typed as ``text`` for ``key``, parsed and checked (raises :class:`SettingError`)."""
    spec = setting_for(key, current)
    text = text.strip()
    if spec.type == "str":
        value: Any = text
    elif spec.type == "bool":
        lowered = text.lower()
        if lowered not in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            raise SettingError(f"{key} must be true or false, not {text!r}")
        value = lowered in ("true", "yes", "1", "on")
    elif spec.type in ("range", "list"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SettingError(f"{key} must be a list such as [-30, 0], not {text!r}") from exc
    else:
        try:
            value = int(text) if spec.type == "int" else float(text)
        except ValueError as exc:
            kind = "a whole number" if spec.type == "int" else "a number"
            raise SettingError(f"{key} must be {kind}, not {text!r}") from exc
    return check_setting(key, value)


def setting_problem(key: str, value: Any) -> str:
    """The problem with ``value`` for ``key``, or ``""``."""
    try:
        check_setting(key, value)
    except SettingError as exc:
        return str(exc)
    return ""


def analysis_problems(metadata: Mapping[str, Any], *, require_fit_module: bool = True) -> dict[str, str]:
    """``{key: problem}`` for every known key of ``metadata`` a worker would refuse (and a missing
    ``Analysis.FitModule`` when ``require_fit_module``)."""
    problems = {key: setting_problem(key, value) for key, value in metadata.items()
                if key in SETTINGS}
    problems = {key: message for key, message in problems.items() if message}
    if require_fit_module and not metadata.get("Analysis.FitModule"):
        problems["Analysis.FitModule"] = "Analysis.FitModule is required"
    return problems


def check_analysis(metadata: MetadataLike) -> None:
    """Raise :class:`SettingError` naming every problem of the :data:`WORKER_KEYS` in ``metadata``
    (what a localisation worker checks before it allocates anything)."""
    missing = object()
    present = {key: metadata.get(key, missing) for key in WORKER_KEYS}
    problems = analysis_problems({k: v for k, v in present.items() if v is not missing})
    if problems:
        raise SettingError("; ".join(problems.values()))
