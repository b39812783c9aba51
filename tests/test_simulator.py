"""The simulated acquisition: frames counted only once the data server holds them, its rate."""
from __future__ import annotations

import pytest

from cluster.simulator import SimulatedAcquisition
from rules.dataserver_client import DataClient
from rules.pzf import decode_frame


def test_frames_are_counted_once_stored_and_the_series_completes(data_server, data_root):
    seen = []
    with DataClient([data_server.url]) as client:
        acquisition = SimulatedAcquisition(client, "sim/counted", frames=120, fps=10_000, size=64,
                                           seed=3)

        def on_frame():
            n = acquisition.get_n_frames()
            if n and not acquisition.finished():     # the frame counted is on disk already
                seen.append((n, (data_root / "sim" / "counted.pcs" / f"frame{n - 1:05d}.pzf").exists()))
        acquisition.add_frame_listener(on_frame)
        acquisition.run()
        assert acquisition.get_n_frames() == 120
        assert acquisition.spool_rate(window=1e9) > 0
    assert len(seen) >= 120 and all(exists for _, exists in seen)
    series = data_root / "sim" / "counted.pcs"
    assert (series / "events.json").exists() and (series / "ground_truth.npy").exists()
    frame = decode_frame((series / "frame00119.pzf").read_bytes())
    assert frame.shape[:2] == (64, 64) and frame.dtype.name == "uint16"


def test_a_child_process_spools_the_series_and_reports_it(data_server, data_root):
    from cluster.spool_process import SpoolingError, SpoolingProcess
    from rules.simulation import SimulationSettings

    counts = []
    process = SpoolingProcess([data_server.url], "sim/child",
                              SimulationSettings(frames=80, fps=400, emitters_per_frame=10), seed=2)
    process.add_frame_listener(lambda: counts.append(process.get_n_frames()))
    process.start()
    assert process.series_path == "sim/child.pcs" and process.metadata["Camera.ROIWidth"] == 256
    assert process.evtLogger.events[0][0] == "StartAq"
    assert process.wait(60) and process.error is None
    assert process.get_n_frames() == 80 and counts[-1] == 80 and counts == sorted(counts)
    assert process.spool_rate() > 0
    assert [e[0] for e in process.evtLogger.events] == ["StartAq", "StopAq"]
    process.close()
    series = data_root / "sim" / "child.pcs"
    assert len(list(series.glob("frame*.pzf"))) == 80 and (series / "events.json").exists()

    # stopped early: the series is completed with what was spooled
    slow = SpoolingProcess([data_server.url], "sim/stopped", SimulationSettings(frames=10_000, fps=50))
    slow.start()
    slow.stop()
    assert slow.wait(60) and slow.error is None and slow.get_n_frames() < 10_000
    slow.close()
    assert (data_root / "sim" / "stopped.pcs" / "events.json").exists()

    # a series that exists already is refused with the reason
    with pytest.raises(SpoolingError, match="already exists"):
        SpoolingProcess([data_server.url], "sim/child", SimulationSettings(frames=5)).start()
