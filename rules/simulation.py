"""The one schema of a simulated acquisition's settings, and its series name.

The window's *Simulate acquisition* dialog and ``spoolside simulate`` check what is asked with
:func:`simulation_problems` / :meth:`SimulationSettings.checked` (same sentences everywhere);
``cluster.simulator`` turns checked settings into frames.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .settings import Setting, SettingError, check_setting
from .uris import check_name

STRUCTURES = ("filaments", "rings")
#: The cameras the simulator has: a uniform sCMOS-like camera (the default), the same with
#: per-pixel offset and read-noise maps written beside the frames, and an EMCCD.
CAMERAS = ("sCMOS", "sCMOS with pixel maps", "EMCCD")
#: The same, as ``spoolside simulate --camera`` names them.
CAMERA_CHOICES = {"scmos": "sCMOS", "scmos-maps": "sCMOS with pixel maps", "emccd": "EMCCD"}

SIMULATION_SETTINGS: dict[str, Setting] = {
    "frames": Setting("int", "frames", 1, 1_000_000),
    "fps": Setting("float", "frames/s", 0.1, 10_000.0),
    "structure": Setting("str", choices=STRUCTURES),
    "emitters_per_frame": Setting("float", "emitters on per frame", 0.1, 1000.0),
    "photons": Setting("float", "photons per emitter and frame", 10.0, 100_000.0),
    "background": Setting("float", "photons per pixel and frame", 0.0, 10_000.0),
    "camera": Setting("str", choices=CAMERAS),
}

#: What each setting is called where it is entered (and so in its problem's sentence).
LABELS = {"frames": "Frames", "fps": "Frame rate", "structure": "Structure",
          "emitters_per_frame": "Emitter density", "photons": "Photons",
          "background": "Background", "camera": "Camera"}


@dataclass(frozen=True)
class SimulationSettings:
    """What a simulated acquisition is asked for (the simulator's defaults)."""

    frames: int = 500
    fps: float = 100.0
    structure: str = "filaments"
    emitters_per_frame: float = 30.0
    photons: float = 1000.0
    background: float = 50.0
    camera: str = "sCMOS"

    def problems(self) -> dict[str, str]:
        """``{field: sentence}`` for every setting out of its type or range."""
        return simulation_problems(dataclasses.asdict(self))

    def checked(self) -> "SimulationSettings":
        """These settings, or :class:`SettingError` naming every problem."""
        problems = self.problems()
        if problems:
            raise SettingError("; ".join(problems.values()))
        return self


def simulation_problems(values: dict[str, Any]) -> dict[str, str]:
    """``{field: sentence}`` for the values of :data:`SIMULATION_SETTINGS` fields that break it."""
    problems = {}
    for field, value in values.items():
        spec = SIMULATION_SETTINGS.get(field)
        if spec is None:
            problems[field] = f"unknown simulation setting {field!r}"
            continue
        try:
            check_setting(LABELS[field], value, spec)
        except SettingError as exc:
            problems[field] = str(exc)
    return problems


def series_path_for(name: str) -> str:
    """Cluster path of a series called ``name`` (``.pcs`` added), checked against PYME's rules
    (``ValueError`` if it breaks them)."""
    name = name.strip().strip("/")
    if not name.endswith(".pcs"):
        name += ".pcs"
    check_name(name)
    return name


def series_name_problem(name: str, taken: frozenset[str] | set[str] = frozenset()) -> str:
    """Why ``name`` cannot be a new series' cluster path ("" when it can); ``taken`` holds the
    series paths (``x/y.pcs``) the cluster already has."""
    name = name.strip()
    if not name:
        return "Type a name for the series, e.g. sim/series_01."
    if name.startswith("/") or name.endswith("/"):
        return "The name cannot start or end with '/'."
    try:
        path = series_path_for(name)
    except ValueError as exc:
        return str(exc)[0].upper() + str(exc)[1:] + "."
    if path in taken:
        return f"The cluster already has a series {path}; pick another name."
    return ""


def free_series_name(taken: frozenset[str] | set[str], stem: str = "sim/series_") -> str:
    """The first ``sim/series_NN`` whose ``.pcs`` is not in ``taken``."""
    n = 1
    while f"{stem}{n:02d}.pcs" in taken:
        n += 1
    return f"{stem}{n:02d}"


def spool_progress(series_path: str, frames: int, total: int, rate: float, asked: float,
                   finished: bool) -> str:
    """One line on a simulated acquisition: frames stored, and the rate really reached."""
    if finished:
        return f"Simulated {series_path}: {frames:,} of {total:,} frames spooled."
    reached = f"{rate:,.0f} frames/s" if rate > 0 else "starting"
    return (f"Simulating {series_path}: {frames:,} / {total:,} frames, {reached} "
            f"(asked for {asked:,.0f})")
