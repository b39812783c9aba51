"""Hands-free analysis: new series on a real embedded cluster are launched once, as they spool."""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import threading

import pytest

from cluster.simulator import SampleModel, SimulatedAcquisition
from rules.autolaunch import AutoLauncher, series_glob
from rules.factories import SpoolLocalLocalizationRuleFactory
from rules.metadata import MetaDataHandler
from tests.helpers import LOCALISE_PRESET as PRESET
from tests.helpers import wait_for

ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-5, 0], "Analysis.StartAt": 0}


def spool(engine, name, frames=40, fps=400.0):
    return SimulatedAcquisition(engine.data, name, frames=frames, fps=fps, size=64, seed=3,
                                serverfilter=engine.serverfilter,
                                sample=SampleModel(emitters_per_frame=5)).start()


def test_series_glob():
    assert series_glob("auto/*.pcs") == "auto/*.pcs"
    assert series_glob("PYME-CLUSTER://lab/auto/") == "auto/*.pcs"
    with pytest.raises(ValueError, match="cannot match a series"):
        series_glob("auto/*.tif")
    with pytest.raises(ValueError, match="give a pattern"):
        series_glob("  ")
    day = datetime.date(2026, 1, 5)
    assert series_glob("*/{{date}}/*.pcs", day) == "*/2026_1_5/*.pcs"  # PYME Acquire's day folder
    assert series_glob("{{year}}-{{month}}/{{ day }}", day) == "2026-1/5/*.pcs"
    with pytest.raises(ValueError, match="unknown variable.*known variables: date, day"):
        series_glob("{{user}}/*.pcs", day)


def test_todays_folder_is_watched(engine, local_cluster):
    launches = []
    chain = [SpoolLocalLocalizationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS))]
    launcher = AutoLauncher(engine, chain, "*/{{date}}/*.pcs", on_launch=launches.append)
    today = datetime.date.today()
    assert launcher.glob == f"*/{today.year}_{today.month}_{today.day}/*.pcs"
    assert launcher.poll() == []
    try:
        spool(engine, f"alice/{today.year}_{today.month}_{today.day}/cells_01", frames=5).wait(30)
        spool(engine, "alice/2001_1_1/old_01", frames=5).wait(30)
        wait_for(lambda: launcher.poll() or launches, timeout=20, what="an auto-launch")
    finally:
        launcher.stop()
    assert [launch.series_uri.rsplit("/", 1)[1] for launch in launches] == ["cells_01.pcs"]


def test_new_matching_series_are_launched_once_while_spooling(engine, local_cluster):
    before = spool(engine, "auto/before", frames=5)
    before.wait(30)
    launches = []
    # PYME's presets start with a spool-local tile: it follows the series on the cluster instead
    chain = [SpoolLocalLocalizationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS))]
    launcher = AutoLauncher(engine, chain, "auto/*.pcs", on_launch=launches.append, interval=0.1)
    assert launcher.poll() == []  # what is already there is left alone
    launcher.start()
    try:
        other = spool(engine, "elsewhere/x", frames=5)
        live = spool(engine, "auto/live_01", frames=60, fps=100.0)
        wait_for(lambda: launches, timeout=20, what="an auto-launch")
        assert not live.finished(), "launched only after spooling ended"
        live.wait(30)
        other.wait(30)
        rule_id = launches[0].rule_id
        assert launches[0].error is None and launches[0].series_uri.endswith("auto/live_01.pcs")

        def done():
            info = engine.rules.queue_info().get(rule_id, {})
            return info.get("tasksCompleted", 0) + info.get("tasksFailed", 0) >= 60
        wait_for(done, timeout=60, what="the auto-launched rule to finish", interval=0.2)
        assert (local_cluster.root / "auto" / "analysis" / "live_01.h5r").is_file()
    finally:
        launcher.stop()
    assert len(launches) == 1  # once each; the other folder and the older series are not launched


def test_cli_watch_prints_launches_until_interrupted(engine, local_cluster, tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(PRESET)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "watch", str(preset), "--pattern", "cli/*.pcs",
         "--server", local_cluster.ruleserver_url, "--dataserver", local_cluster.dataserver_url,
         "--serverfilter", engine.serverfilter], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("watching") for line in lines), timeout=30,
                 what="the watch to start")
        spool(engine, "cli/s1", frames=10).wait(30)
        wait_for(lambda: any("launched rule" in line for line in lines), timeout=20,
                 what="the launch line")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)
    reader.join(5)
    assert process.returncode == 0, process.stderr.read()
    launched = [line for line in lines if line.startswith("launched rule")]
    assert len(launched) == 1 and f"PYME-CLUSTER://{engine.serverfilter}/cli/s1.pcs" in launched[0]
    assert lines[-1].strip() == "stopped watching"


def test_cli_watch_bad_pattern_is_one_line(tmp_path, local_cluster, capsys):
    from rules.cli import run_watch
    preset = tmp_path / "preset.yaml"
    preset.write_text(PRESET)
    code = run_watch([str(preset), "--pattern", "x/*.tif", "--server", local_cluster.ruleserver_url,
                      "--dataserver", local_cluster.dataserver_url])
    assert code == 1
    assert capsys.readouterr().err.startswith("error: pattern 'x/*.tif' cannot match a series")
