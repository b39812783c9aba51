"""The cluster of one doing real science: simulate → localise → render → measure, with real workers."""
from __future__ import annotations

import csv
import functools
import io
import os
import re
import signal
import subprocess
import sys

import helpers
import numpy as np
import tifffile

from cluster.local import start_local_cluster
from cluster.simulator import SampleModel, SimulatedAcquisition
from resources import resource_path
from rules import Cluster, LocalisationRuleFactory, RecipeRuleFactory
from rules.chain import rule_for_series
from rules.metadata import MetaDataHandler

START_AT = 10
ANALYSIS = {"Analysis.FitModule": "LatGaussFitFR", "Analysis.DetectionThreshold": 1.0,
            "Analysis.BGRange": [-10, 0], "Analysis.StartAt": START_AT}
SPARSE = SampleModel(emitters_per_frame=8)


#: Polls every 0.1 s: the predicates here query a loaded rule server.
wait_for = functools.partial(helpers.wait_for, interval=0.1)


def chain_statuses(client, first_id: str) -> dict[str, dict]:
    """Info of a rule and every follow-on it spawned, by ID."""
    info = client.queue_info()
    ids, todo = [], [first_id]
    while todo:
        rule_id = todo.pop()
        ids.append(rule_id)
        todo += client.followon_ids(rule_id) or []
    return {i: info[i] for i in ids if i in info}


def simulate(engine, name, frames, fps=2000.0, seed=1, run=True, scmos=False):
    acquisition = SimulatedAcquisition(engine.data, name, frames=frames, fps=fps, size=96,
                                       seed=seed, serverfilter=engine.serverfilter, sample=SPARSE,
                                       scmos=scmos)
    if run:
        acquisition.run()
    return acquisition


def test_simulated_series_localises_to_ground_truth(engine, local_cluster):
    acquisition = simulate(engine, "sim/truth", frames=200)
    rule = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS)).get_rule(
        context={"seriesName": acquisition.series_uri})
    rule.push(cluster=engine)
    rule.join(timeout=120)
    status = rule.status()
    assert status["tasksCompleted"] == 200 and status["tasksFailed"] == 0

    fits = engine.data.read_table("sim/analysis/truth.h5r", "FitResults")
    truth = np.load(io.BytesIO(engine.data.get_file("sim/truth.pcs/ground_truth.npy")))
    assert fits["tIndex"].min() >= START_AT and fits["tIndex"].max() < 200
    # score isolated emitters (no other emitter on within 500 nm) once the background window is full
    found, errors, scored = 0, [], 0
    for frame, x, y, _photons in truth[truth[:, 0] >= START_AT]:
        others = truth[truth[:, 0] == frame]
        if np.sort(np.hypot(others[:, 1] - x, others[:, 2] - y))[1:2].min(initial=1e9) < 500:
            continue
        scored += 1
        in_frame = fits[fits["tIndex"] == int(frame)]
        d = np.hypot(in_frame["fitResults"]["x0"] - x, in_frame["fitResults"]["y0"] - y)
        if len(d) and d.min() < 100:
            found += 1
            errors.append(d.min())
    assert scored > 300
    assert found / scored > 0.9, f"recall {found / scored:.2f} over {scored} isolated emitters"
    assert np.median(errors) < 25, f"median error {np.median(errors):.1f} nm"
    assert len(fits) < 1.1 * (truth[:, 0] >= START_AT).sum(), "too many false positives"


def test_chain_renders_image_and_measures_blobs(engine, local_cluster):
    # the bundled default preset as launched from the window or `spoolside launch` (and as PYME
    # launches it): localise, then one recipe that renders and measures, beside the results
    acquisition = simulate(engine, "sim/chain", frames=100, seed=2)
    first = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS))
    first.chain(RecipeRuleFactory(
        recipe=resource_path("recipes", "render_and_measure_blobs.yaml").read_text()))
    rule = rule_for_series([first, first.on_completion], acquisition.series_uri)
    rule.push(cluster=engine)

    root = local_cluster.root / "sim" / "analysis"
    wait_for(lambda: (root / "chain_blobs.csv").exists(), 120, "the blob table")
    statuses = wait_for(lambda: (s := chain_statuses(engine.rules, rule.rule_id)) and len(s) == 2
                        and all(v["finished"] for v in s.values()) and s, 30, "two finished rules")
    assert all(v["tasksFailed"] == 0 for v in statuses.values()), statuses

    image = tifffile.imread(root / "chain.tif")
    assert image.ndim == 2 and image.max() > 0
    rows = list(csv.DictReader(io.StringIO((root / "chain_blobs.csv").read_text())))
    assert len(rows) >= 1


def test_live_series_is_analysed_while_it_spools(engine, local_cluster):
    from rules import SpoolLocalLocalizationRuleFactory

    acquisition = simulate(engine, "sim/live", frames=150, fps=100, seed=3, run=False)
    acquisition.start()
    rule = SpoolLocalLocalizationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS)).get_rule(
        context={"seriesName": acquisition.series_uri, "spooler": acquisition})
    rule.push(cluster=engine)
    # tasks complete before spooling ends: analysis follows the acquisition
    wait_for(lambda: rule.status().get("tasksCompleted", 0) > 0, 30, "first live results")
    assert not acquisition.finished()
    rule.join(timeout=90)
    status = rule.status()
    assert status["tasksCompleted"] == 150 and status["tasksFailed"] == 0
    events = engine.data.read_table("sim/analysis/live.h5r", "Events")
    assert b"StopAq" in set(events["EventName"])


def test_scmos_series_uses_the_maps_it_names_on_the_cluster(engine, local_cluster):
    acquisition = simulate(engine, "sim/scmos", frames=60, seed=6, scmos=True)
    md = MetaDataHandler.from_JSON(engine.data.get_file("sim/scmos.pcs/metadata.json").decode())
    assert md["Camera.DarkMapID"].endswith("sim/scmos.pcs/camera_dark.npy")
    assert md["Camera.VarianceMapID"].endswith("sim/scmos.pcs/camera_variance.npy")
    rule = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(
        {**ANALYSIS, "Analysis.StartAt": 0, "Analysis.BGRange": [0, 0]})).get_rule(
        context={"seriesName": acquisition.series_uri})
    rule.push(cluster=engine)
    rule.join(timeout=120)
    assert rule.status()["tasksFailed"] == 0
    fits = engine.data.read_table("sim/analysis/scmos.h5r", "FitResults")
    truth = np.load(io.BytesIO(engine.data.get_file("sim/scmos.pcs/ground_truth.npy")))
    variance = np.load(io.BytesIO(engine.data.get_file("sim/scmos.pcs/camera_variance.npy")))
    hot = variance > 10.0 ** 2
    assert hot.any()
    # localisations far from every emitter that is on (a fit between two close emitters of a
    # filament lands within 400 nm): few, and none on a hot pixel
    false = on_hot = 0
    for row in fits:
        on = truth[truth[:, 0] == row["tIndex"]]
        x, y = row["fitResults"]["x0"], row["fitResults"]["y0"]
        d = np.hypot(on[:, 1] - x, on[:, 2] - y)
        if not (len(d) and d.min() < 400):
            false += 1
            px, py = int(round(x / 100.0)), int(round(y / 100.0))
            on_hot += bool(hot[max(px - 1, 0):px + 2, max(py - 1, 0):py + 2].any())
    assert len(fits) > 200 and false <= 0.01 * len(fits) and on_hot == 0, (false, on_hot)


def test_missing_camera_map_fails_the_task_naming_the_map(engine, local_cluster):
    acquisition = simulate(engine, "sim/nomap", frames=5, seed=7)
    rule = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(
        {**ANALYSIS, "Analysis.StartAt": 0,
         "Camera.VarianceMapID": "PYME-CLUSTER://e2e/maps/missing_variance.tif"})).get_rule(
        context={"seriesName": acquisition.series_uri})
    rule.push(cluster=engine)
    wait_for(lambda: rule.status()["tasksFailed"] == 5, 60, "the failed tasks")
    log = engine.data.get_file(f"LOGS/rules/{rule.rule_id}.log").decode()
    assert "Camera.VarianceMapID" in log and "missing_variance.tif" in log


def test_bad_recipe_fails_with_a_log_naming_the_module(engine, local_cluster):
    acquisition = simulate(engine, "sim/badrecipe", frames=20, seed=4)
    bad = RecipeRuleFactory(recipe="- nosuch.Module: {inputName: FitResults}\n",
                            output_dir="{{spool_dir}}/analysis")
    first = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS))
    first.chain(bad)
    rule = first.get_rule(context={"seriesName": acquisition.series_uri})
    rule.push(cluster=engine)
    statuses = wait_for(lambda: (s := chain_statuses(engine.rules, rule.rule_id)) and len(s) == 2
                        and all(v["finished"] for v in s.values()) and s, 60, "the failed recipe")
    failed = [rid for rid, info in statuses.items() if info["tasksFailed"]]
    assert len(failed) == 1
    log = engine.data.get_file(f"LOGS/rules/{failed[0]}.log").decode()
    assert "nosuch.Module" in log


def test_killed_worker_is_replaced_and_counts_stay_exact(tmp_path):
    with start_local_cluster(tmp_path, workers=1, serverfilter="kill", task_timeout=3) as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="kill") as engine:
        acquisition = simulate(engine, "sim/kill", frames=300, seed=5)
        rule = LocalisationRuleFactory(analysisMetadata=MetaDataHandler(ANALYSIS)).get_rule(
            context={"seriesName": acquisition.series_uri})
        rule.push(cluster=engine)
        wait_for(lambda: rule.status().get("tasksRunning", 0) > 0, 30, "a running task")
        victim = lc.pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: lc.pool.restarts >= 1, 10, "a replacement worker")
        # the replacement, like every embedded worker, yields to the acquisition on this PC
        lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        wait_for(lambda: os.getpriority(os.PRIO_PROCESS, lc.pool.pids[0]) == lowered, 30,
                 "the replacement worker below normal priority")
        rule.join(timeout=120)
        status = rule.status()
        assert status["tasksCompleted"] + status["tasksFailed"] == 300
        assert status["tasksCompleted"] == 300
        assert status["tasksRunning"] == 0
        assert status["tasksTimedOut"] >= 1, "the kill should have hit a running batch"


def test_cluster_command_prints_urls_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "cluster", "--root", str(tmp_path),
                                "--workers", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        urls = {line.split(":", 1)[0]: line.split(": ", 1)[1].strip() for line in lines[1:3]}
        assert urls["rule server"].startswith("http://127.0.0.1:")
        with Cluster(urls["rule server"], urls["data server"]) as engine:
            assert engine.rules.queue_info() == {}
            engine.data.put_file("hello.txt", b"hi")
            assert engine.data.get_file("hello.txt") == b"hi"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "cluster stopped" in out


def test_re_analysis_from_the_command_line_reads_its_own_new_results(engine, local_cluster, tmp_path,
                                                                      capsys):
    from rules.cli import run_launch

    acquisition = simulate(engine, "sim/again", frames=60, seed=5)
    default = resource_path("presets", "default.yaml").read_text()
    strict = tmp_path / "strict.yaml"
    strict.write_text(re.sub(r"Analysis\.DetectionThreshold: [0-9.]+",
                             "Analysis.DetectionThreshold: 4.0", default))
    assert strict.read_text() != default
    args = ["--series", acquisition.series_uri, "--server", local_cluster.ruleserver_url,
            "--dataserver", local_cluster.dataserver_url, "--serverfilter", engine.serverfilter,
            "--watch", "--interval", "0.2", "--timeout", "120"]
    assert run_launch([str(resource_path("presets", "default.yaml"))] + args) == 0
    assert run_launch([str(strict)] + args) == 0, capsys.readouterr().out

    root = local_cluster.root / "sim" / "analysis"
    first = engine.data.read_table("sim/analysis/again.h5r", "FitResults")
    second = engine.data.read_table("sim/analysis/again_1.h5r", "FitResults")
    assert 0 < len(second) < len(first)
    # the re-run's render and blob table come from its own results, not the first run's
    assert (root / "again_1.tif").exists() and (root / "again_1_blobs.csv").exists()
    assert not (root / "again_2.tif").exists()
    assert (root / "again_1.tif").read_bytes() != (root / "again.tif").read_bytes()
    assert (root / "again_1_blobs.csv").read_bytes() != (root / "again_blobs.csv").read_bytes()
