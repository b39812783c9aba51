"""The one schema of a simulated acquisition's settings (rules.simulation)."""
from __future__ import annotations

import pytest

from rules.settings import SettingError
from rules.simulation import SimulationSettings, series_path_for, simulation_problems, spool_progress


def test_defaults_are_valid_and_problems_are_named_by_their_label():
    assert SimulationSettings().checked() == SimulationSettings()
    problems = SimulationSettings(photons=0, camera="CCD", structure="dots", fps=0,
                                  emitters_per_frame=-1, background=float("nan"),
                                  frames=2.5).problems()   # type: ignore[arg-type]
    assert problems == {
        "frames": "Frames must be a whole number, not 2.5",
        "fps": "Frame rate must be at least 0.1, not 0",
        "structure": "Structure must be one of filaments, rings, not 'dots'",
        "emitters_per_frame": "Emitter density must be at least 0.1, not -1",
        "photons": "Photons must be at least 10, not 0",
        "background": "Background must be finite",
        "camera": "Camera must be one of sCMOS, sCMOS with pixel maps, EMCCD, not 'CCD'",
    }
    with pytest.raises(SettingError, match="Photons must be at least 10.*Camera must be one of"):
        SimulationSettings(photons=0, camera="CCD").checked()
    assert simulation_problems({"zoom": 2}) == {"zoom": "unknown simulation setting 'zoom'"}


def test_series_names_and_progress_lines():
    assert series_path_for(" sim/a ") == "sim/a.pcs"
    with pytest.raises(ValueError):
        series_path_for("sim/../a")
    assert spool_progress("sim/a.pcs", 1200, 5000, 498.6, 500, False) == \
        "Simulating sim/a.pcs: 1,200 / 5,000 frames, 499 frames/s (asked for 500)"
    assert spool_progress("sim/a.pcs", 5000, 5000, 0, 500, True) == \
        "Simulated sim/a.pcs: 5,000 of 5,000 frames spooled."


def test_the_cli_and_the_simulator_take_the_schema(data_server):
    from app.cli import parse_args
    from cluster.simulator import EMCCD_CAMERA, SimulatedAcquisition
    from rules.dataserver_client import DataClient

    args = parse_args(["simulate", "sim/x", "--camera", "emccd", "--density", "12",
                       "--photons", "300", "--background", "4", "--structure", "rings"])
    assert (args.camera, args.density, args.photons, args.background) == ("emccd", 12, 300, 4)
    with DataClient([data_server.url]) as client:
        acquisition = SimulatedAcquisition.from_settings(
            client, "sim/x", SimulationSettings(camera="EMCCD", photons=300, background=4,
                                                emitters_per_frame=12, structure="rings"))
        assert acquisition.simulator.camera == EMCCD_CAMERA
        assert acquisition.metadata["Camera.TrueEMGain"] == 100
        assert acquisition.metadata["Camera.Name"] == "Spoolside simulated EMCCD"
        assert acquisition.simulator.sample.photons_mean == 300
        with pytest.raises(SettingError, match="Background must be at least 0"):
            SimulatedAcquisition.from_settings(client, "sim/y", SimulationSettings(background=-1))
