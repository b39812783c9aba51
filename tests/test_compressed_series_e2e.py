"""PYME Acquire's compressed spooling on the cluster of one: the bundled default chain localises the
Huffman-coded and the quantised series PYME wrote like the raw one, and a damaged frame fails its
task with a log that names the codec."""
from __future__ import annotations

import functools
import shutil

import helpers
import numpy as np
import pytest
import yaml

from cluster.local import start_local_cluster
from cluster.localisation.background import bg_frame_indices
from cluster.simulator import SimulatedAcquisition
from resources import resource_path
from rules import Cluster
from rules.chain import rule_for_series
from rules.presets import load_preset
from rules.pzf import COMPRESSION_HUFFMAN, read_header

wait_for = functools.partial(helpers.wait_for, interval=0.1)
SERIES = ("series", "series_huffman", "series_quant")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pyme_fixtures):
    root = tmp_path_factory.mktemp("compressed")
    for name in SERIES:
        shutil.copytree(pyme_fixtures / f"{name}.pcs", root / "pyme" / f"{name}.pcs")
    with start_local_cluster(root, workers=1, serverfilter="codecs", task_timeout=60) as lc, \
            Cluster(lc.ruleserver_url, lc.dataserver_url, serverfilter="codecs") as engine:
        yield lc, engine


def _run_default_chain(engine, series_uri: str):
    rule = rule_for_series(load_preset(resource_path("presets", "default.yaml")), series_uri)
    rule.push(cluster=engine)
    return rule


def _finished_chain(engine, rule_id: str, expected: int) -> dict:
    def statuses():
        info, ids, todo = engine.rules.queue_info(), [], [rule_id]
        while todo:
            ids.append(todo.pop())
            todo += engine.rules.followon_ids(ids[-1]) or []
        found = {i: info[i] for i in ids if i in info}
        return found if len(found) == expected and all(v["finished"] for v in found.values()) else None
    return wait_for(statuses, 120, f"{expected} finished rules")


def test_default_chain_localises_compressed_series_like_the_raw_one(cluster):
    lc, engine = cluster
    rules = {name: _run_default_chain(engine, f"PYME-CLUSTER:///pyme/{name}.pcs") for name in SERIES}
    fits = {}
    for name, rule in rules.items():
        statuses = _finished_chain(engine, rule.rule_id, 2)
        assert all(s["tasksFailed"] == 0 for s in statuses.values()), (name, statuses)
        assert (lc.root / "pyme" / "analysis" / f"{name}_blobs.csv").exists()
        fits[name] = engine.data.read_table(f"pyme/analysis/{name}.h5r", "FitResults")

    def spots(table):
        order = np.lexsort((table["fitResults"]["y0"], table["fitResults"]["x0"], table["tIndex"]))
        t = table[order]
        return t["tIndex"], np.column_stack([t["fitResults"]["x0"], t["fitResults"]["y0"]])

    raw_t, raw_xy = spots(fits["series"])
    assert len(raw_t) == 24
    huff_t, huff_xy = spots(fits["series_huffman"])  # lossless: the very same fits
    np.testing.assert_array_equal(huff_t, raw_t)
    np.testing.assert_array_equal(huff_xy, raw_xy)
    quant_t, quant_xy = spots(fits["series_quant"])  # lossy, within the Poisson noise: same spots
    np.testing.assert_array_equal(quant_t, raw_t)
    assert np.abs(quant_xy - raw_xy).max() < 15.0


def test_damaged_huffman_frame_fails_its_task_naming_the_codec(cluster):
    lc, engine = cluster
    folder = lc.root / "pyme" / "damaged.pcs"
    shutil.copytree(lc.root / "pyme" / "series_huffman.pcs", folder)
    frame = folder / "frame00005.pzf"
    frame.write_bytes(frame.read_bytes()[:1000])
    rule = _run_default_chain(engine, "PYME-CLUSTER:///pyme/damaged.pcs")
    statuses = _finished_chain(engine, rule.rule_id, 2)
    # frame 5, and the frames whose background (the preset's Analysis.BGRange) includes it
    preset = yaml.safe_load(resource_path("presets", "default.yaml").read_text())
    bg_range = preset[0][1]["analysisMetadata"].get("Analysis.BGRange", [-10, 0])
    failed = [i for i in range(8) if i == 5 or 5 in bg_frame_indices(i, bg_range)]
    assert statuses[rule.rule_id]["tasksFailed"] == len(failed)
    assert statuses[rule.rule_id]["tasksCompleted"] == 8 - len(failed)
    log = engine.data.get_file(f"LOGS/rules/{rule.rule_id}.log").decode()
    assert "Huffman-coded (DataCompression=1)" in log and "spool it again" in log


def test_simulator_spools_huffman_coded_frames_as_pyme_acquire(cluster):
    _, engine = cluster
    SimulatedAcquisition(engine.data, "sim/huff", frames=3, fps=1000, size=32,
                         serverfilter="codecs").run()
    header = read_header(engine.data.get_file("sim/huff.pcs/frame00002.pzf"))
    assert (header.compression, header.quantization, header.frame_num) == (COMPRESSION_HUFFMAN, 0, 2)
