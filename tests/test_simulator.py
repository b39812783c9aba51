"""The simulated acquisition: frames counted only once the data server holds them, its rate."""
from __future__ import annotations

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
