"""Benchmark: a 1,000,000-row ``.h5r`` opened in the Results view — how soon is it on screen?

Writes a results file of N ``LatGaussFitFR`` rows into a data server run in a child process (off
this process's GIL, as the embedded cluster's server is in the window), then opens it in a
:class:`widgets.results_view.ResultsView` (offscreen) as the Series tab and *Open from cluster…*
do. Measured: from ``preview()`` to the first page on screen (row count probe + first page +
metadata, readable columns, the table view laid out and painted); to every row read (sorting and
plots over all of them); the longest stall of the GUI thread meanwhile (gaps of a 5 ms timer); a
sort of all rows by x; the process RSS.

Target: the view shown ≤ 2 s. ``--probe`` ignores the row count our data server sends with a
page, as with PYME's data server (the count is then found with one-row reads).

    QT_QPA_PLATFORM=offscreen python benchmarks/results_table.py [--rows 1000000] [--probe]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gui import rss_mib  # noqa: E402
from benchmarks.live_view import StallMeter  # noqa: E402
from benchmarks.support import serve_until_stdin_closes, servers_in_child, verdict  # noqa: E402
from cluster import h5r  # noqa: E402
from cluster.localisation.results import empty_results  # noqa: E402
from rules.dataserver_client import DataClient  # noqa: E402

TARGET_S = 2.0


def write_results(path: Path, rows: int) -> None:
    rng = np.random.default_rng(1)
    chunk = 200_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        records = empty_results(n)
        records["tIndex"] = np.arange(start, start + n) // 30
        records["fitResults"]["x0"] = rng.uniform(0, 25_600, n)
        records["fitResults"]["y0"] = rng.uniform(0, 25_600, n)
        records["fitResults"]["A"] = rng.gamma(4, 50, n)
        records["fitResults"]["sigma"] = rng.normal(130, 10, n)
        records["fitResults"]["background"] = rng.normal(20, 2, n)
        records["fitError"]["x0"] = rng.gamma(4, 3, n)
        records["fitError"]["y0"] = rng.gamma(4, 3, n)
        h5r.append_table(path, "FitResults", records)
    h5r.write_metadata(path, {"voxelsize.x": 0.1, "voxelsize.y": 0.1,
                              "Camera.ElectronsPerCount": 2.0, "Camera.TrueEMGain": 1.0})


class CountlessClient(DataClient):
    """A data client that ignores the row count in a reply, as from PYME's data server."""

    def read_table_page(self, *args, **kwargs):
        return super().read_table_page(*args, **kwargs)[0], None


def serve(root: str) -> None:
    from cluster.dataserver import DataServer
    serve_until_stdin_closes(DataServer(root).start())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--probe", action="store_true", help="find the row count by reading")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication.instance() or QApplication([])
    from widgets.results_view import ResultsView

    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        write_results(Path(root) / "big.h5r", args.rows)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - started:.1f} s "
              f"({(Path(root) / 'big.h5r').stat().st_size / 1e6:.0f} MB)")
        with servers_in_child([__file__, "--serve", root]) as (url,):
            client_class = CountlessClient if args.probe else DataClient
            view = ResultsView(lambda: client_class(url))
            view.resize(1000, 700)
            view.show()
            rss_before = rss_mib()
            times: dict[str, float] = {}
            view.previewShown.connect(lambda *_: times.setdefault("shown", time.perf_counter()))
            view.tableRead.connect(lambda *_: times.setdefault("read", time.perf_counter()))
            meter = StallMeter()
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            view.preview("PYME-CLUSTER:///big.h5r")
            while "shown" not in times and time.perf_counter() - t0 < 60:
                app.processEvents()
            view.table_view.viewport().repaint()  # the first page painted
            shown = time.perf_counter() - t0
            while "read" not in times and time.perf_counter() - t0 < 300:
                app.processEvents()
            read = times.get("read", float("nan")) - t0
            cpu = time.process_time() - cpu0
            stall = max(meter.gaps) if meter.gaps else 0.0
            sort_started = time.perf_counter()
            view.table_view.sortByColumn(1, Qt.DescendingOrder)
            view.table_view.viewport().repaint()
            sort_s = time.perf_counter() - sort_started
            rows = view.table_model.rowCount()
            rss_after = rss_mib()
            print(f"rows: {rows:,} ({view.caption.text()})")
            print(f"view shown: {shown:.2f} s; every row read: {read:.2f} s; process CPU "
                  f"{cpu:.2f} s; longest GUI stall {stall * 1000:.0f} ms")
            print(f"sort of all rows by x: {sort_s * 1000:.0f} ms; RSS {rss_before:.0f} → "
                  f"{rss_after:.0f} MiB")
            assert view.stop()
    return verdict([(f"{args.rows:,}-row .h5r view shown ≤ {TARGET_S:g} s ({shown:.2f} s)",
                     shown <= TARGET_S and rows == args.rows)])


if __name__ == "__main__":
    sys.exit(main())
