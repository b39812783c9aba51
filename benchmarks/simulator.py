"""Simulator benchmark: 256×256 frames of the default simulation (filaments, ~30 emitters a frame,
the uniform sCMOS-like camera) spooled as Huffman-coded PZF to a data server running in a child
process on loopback, through ``cluster.simulator.SimulatedAcquisition`` (the engine of
``spoolside simulate`` and of the window's *Simulate acquisition*).

1. as fast as it can: frames/s of this process's CPU time (generation, encoding, PUTs) and of
   wall-clock time (frames confirmed by the server);
2. asked for 200 and 500 frames/s: the rate the server confirmed frames at, first to last.

Targets: ≥ 500 frames/s (CPU time of this one process, and wall clock); each asked-for rate held
within 5 %.  Exits 1 on a miss.  Run pinned to one core for the CPU figure, e.g.
``taskset -c 1 python benchmarks/simulator.py [--frames 3000] [--structure filaments]``.

``--window [--workers N]``: the same rates asked for inside the window instead (offscreen), on the
embedded cluster whose data server shares the window's process, through *Simulate acquisition*
(which also launches the window's default chain live on the series, with N workers; 0: spooling
only).  Reports the rate the window's acquisition reached; no targets.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import serve_until_stdin_closes, servers_in_child, verdict  # noqa: E402

TARGET_FPS = 500.0
HELD_RATES = (200.0, 500.0)
TOLERANCE = 0.05


def serve(root: str) -> None:
    """The data server, free to run on every core (``taskset`` pins only the simulator)."""
    from cluster.dataserver import DataServer
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    serve_until_stdin_closes(DataServer(root, serverfilter="bench").start())


def spool(client, name: str, frames: int, fps: float, args) -> tuple[float, float, float]:
    """Spool one series; return (CPU s of this process, wall s, confirmed frames/s)."""
    from cluster.simulator import SimulatedAcquisition

    acquisition = SimulatedAcquisition(client, name, frames=frames, fps=fps, seed=1,
                                       structure=args.structure, serverfilter="bench")
    cpu, wall = time.process_time(), time.perf_counter()
    acquisition.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert acquisition.get_n_frames() == frames
    return cpu, wall, acquisition.spool_rate(window=1e9)


def window_rates(args) -> int:
    """The rates *Simulate acquisition* reaches in the window (offscreen, embedded cluster)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5.QtCore import QSettings
    from PyQt5.QtWidgets import QApplication

    from app.launcher import ClusterAddress
    from app.main_window import MainWindow
    from cluster.local import start_local_cluster
    from rules.simulation import SimulationSettings

    app = QApplication.instance() or QApplication([])

    def wait_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.005)
        return condition()

    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_local_cluster(Path(tmp) / "data", workers=args.workers)
        window = MainWindow(QSettings(str(Path(tmp) / "settings.ini"), QSettings.IniFormat),
                            Path(tmp) / "config")
        try:
            window.show()
            window.set_cluster(ClusterAddress(cluster.ruleserver_url, (cluster.dataserver_url,),
                                              cluster.serverfilter, embedded=True))
            assert wait_until(lambda: window._reachable is True, 20)
            for fps in (*HELD_RATES, 10_000.0):
                frames = 3000 if fps > 1e3 else int(fps * 6)
                n = len(window._acquisitions)
                window.simulate(f"bench/window_{fps:.0f}", SimulationSettings(frames=frames, fps=fps))
                if not wait_until(lambda: len(window._acquisitions) > n, 60):
                    raise RuntimeError(f"no acquisition started: {window.statusBar().currentMessage()} "
                                       f"{getattr(window, 'last_error', '')}")
                acquisition = window._acquisitions[-1]
                cpu = time.process_time()
                assert wait_until(acquisition.finished, frames / min(fps, 100) + 60)
                rate = acquisition.spool_rate()     # first to last, once finished
                asked = "as fast as it can" if fps > 1e3 else f"asked for {fps:.0f} frames/s"
                print(f"window, {args.workers} worker(s), {asked}, {frames} frames: {rate:,.1f} "
                      f"frames/s reached; window process {(time.process_time() - cpu) / frames * 1e3:.2f} "
                      f"ms CPU a frame (GUI, data and rule servers, simulator)", flush=True)
                if args.workers:    # the analysis done before the next series
                    wait_until(lambda: all(window.rule_model.status(r).terminal
                                           for r in window.rule_model.rule_ids()), 300)
        finally:
            window.ask_before_closing = False
            window.close()
            window.shutdown()
            cluster.stop()
    return 0


def main() -> int:
    from rules.dataserver_client import DataClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--structure", default="filaments")
    parser.add_argument("--window", action="store_true", help="measure inside the window")
    parser.add_argument("--workers", type=int, default=1, help="with --window: worker processes")
    args = parser.parse_args()
    if args.window:
        return window_rates(args)
    checks = []
    with tempfile.TemporaryDirectory() as root, \
            servers_in_child([__file__, "--serve", root]) as (url,), \
            DataClient([url], "bench") as client:
        spool(client, "bench/warm", 50, 1e6, args)  # numba's cached code loaded, tables built
        cpu, wall, rate = spool(client, "bench/fast", args.frames, 1e6, args)
        cpu_fps = args.frames / cpu
        print(f"as fast as it can, {args.frames} frames: {cpu_fps:,.0f} frames/s of CPU time "
              f"({cpu / args.frames * 1e3:.2f} ms a frame), {args.frames / wall:,.0f} frames/s "
              f"wall ({rate:,.0f} confirmed first to last)")
        checks.append((f"≥ {TARGET_FPS:.0f} frames/s of CPU time of one process", cpu_fps >= TARGET_FPS))
        checks.append((f"≥ {TARGET_FPS:.0f} frames/s wall clock", rate >= TARGET_FPS))
        for fps in HELD_RATES:
            frames = int(fps * 6)
            cpu, wall, rate = spool(client, f"bench/at_{fps:.0f}", frames, fps, args)
            print(f"asked for {fps:.0f} frames/s, {frames} frames: {rate:,.1f} frames/s confirmed "
                  f"({rate / fps:.1%}); {cpu / wall:.0%} of a core")
            checks.append((f"{fps:.0f} frames/s held within {TOLERANCE:.0%}",
                           abs(rate / fps - 1) <= TOLERANCE))
    return verdict(checks)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit(main())
