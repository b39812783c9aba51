"""Benchmark: what one batch appended to a growing ``.h5r`` results file costs.

A worker files each batch of fit results (64 frames, ~1,000 localisations) with its task
identities; the data server appends it crash-safely (:func:`cluster.h5r.append_table`). This grows
a ``FitResults`` table to 10,000, 100,000 and 1,000,000 rows and, at each size, times a series of
such appends (CPU time of this process, wall time with fsync, bytes written to disk). The cost of
an append must not grow with the file: at 1,000,000 rows at most ``GROWTH_TARGET`` times the cost
at 10,000 rows (CPU time and bytes written), and at most ``APPEND_TARGET_S`` wall time (p50).

    .venv/bin/python benchmarks/h5r_append.py [--appends 20] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import verdict  # noqa: E402
from cluster import h5r  # noqa: E402
from cluster.localisation.results import FIT_RESULTS_DTYPE  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
FRAMES_PER_BATCH = 64
ROWS_PER_FRAME = 16
#: An append at 1,000,000 rows costs at most this many times one at 10,000 rows (p50 CPU time and
#: bytes written to disk).
GROWTH_TARGET = 2.0
#: p50 wall time of one append at 1,000,000 rows.
APPEND_TARGET_S = 0.05


def fill(rows: np.ndarray, rng) -> None:
    """Fit values as random as real ones (they hardly compress)."""
    for group in ("fitResults", "fitError"):
        for name in ("A", "x0", "y0", "sigma", "background"):
            rows[group][name] = rng.random(len(rows), np.float32) * 1000
    rows["nchi2"] = rng.random(len(rows), np.float32)
    rows["subtractedBackground"] = rng.random(len(rows), np.float32) * 100


def batch(first_frame: int, rng) -> tuple[np.ndarray, h5r.TaskRows]:
    """One worker batch: ``FRAMES_PER_BATCH`` frames of random localisations, with task rows."""
    rows = np.zeros(FRAMES_PER_BATCH * ROWS_PER_FRAME, FIT_RESULTS_DTYPE)
    rows["tIndex"] = np.repeat(np.arange(first_frame, first_frame + FRAMES_PER_BATCH),
                               ROWS_PER_FRAME)
    fill(rows, rng)
    counts = tuple((frame, ROWS_PER_FRAME)
                   for frame in range(first_frame, first_frame + FRAMES_PER_BATCH))
    return rows, h5r.TaskRows("bench-rule", counts)


def grow_to(path: Path, rows: int, state: dict, rng) -> None:
    """Append whole batches until the table holds ``rows`` rows (large appends, not timed)."""
    while state["rows"] < rows:
        frames = min((rows - state["rows"]) // ROWS_PER_FRAME, 20_000)
        records = np.zeros(frames * ROWS_PER_FRAME, FIT_RESULTS_DTYPE)
        records["tIndex"] = np.repeat(np.arange(state["frame"], state["frame"] + frames),
                                      ROWS_PER_FRAME)
        fill(records, rng)
        counts = tuple((f, ROWS_PER_FRAME) for f in range(state["frame"], state["frame"] + frames))
        h5r.append_table(path, "FitResults", records, h5r.TaskRows("bench-rule", counts))
        state["rows"] += len(records)
        state["frame"] += frames


def written_bytes() -> int:
    """Bytes this process has sent to storage so far (Linux ``/proc/self/io``; 0 elsewhere)."""
    try:
        with open("/proc/self/io", encoding="ascii") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("write_bytes"))
    except (OSError, StopIteration):
        return 0


def time_appends(path: Path, n: int, state: dict, rng) -> tuple[list[float], list[float], list[int]]:
    walls, cpus, written = [], [], []
    for _ in range(n):
        records, rows = batch(state["frame"], rng)
        w0, c0, b0 = time.perf_counter(), time.process_time(), written_bytes()
        h5r.append_table(path, "FitResults", records, rows)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        written.append(written_bytes() - b0)
        state["rows"] += len(records)
        state["frame"] += FRAMES_PER_BATCH
    return walls, cpus, written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20, help="timed appends per size")
    parser.add_argument("--dir", default=None, help="folder for the results file (default: temp)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="h5r-bench-", dir=args.dir))
    rng = np.random.default_rng(1)
    path = folder / "r.h5r"
    state = {"rows": 0, "frame": 0}
    p50, cpu50, disk = {}, {}, {}
    try:
        for size in SIZES:
            grow_to(path, size, state, rng)
            walls, cpus, written = time_appends(path, args.appends, state, rng)
            p50[size], cpu50[size] = statistics.median(walls), statistics.median(cpus)
            disk[size] = statistics.median(written)
            print(f"{size:>9,} rows ({path.stat().st_size / 1e6:6.1f} MB): append of "
                  f"{FRAMES_PER_BATCH * ROWS_PER_FRAME} rows p50 {p50[size] * 1e3:7.2f} ms wall "
                  f"(max {max(walls) * 1e3:7.2f}), CPU p50 {cpu50[size] * 1e3:6.2f} ms, "
                  f"written to disk p50 {disk[size] / 1e6:6.2f} MB", flush=True)
        assert len(h5r.read_table(path, "FitResults")) == state["rows"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    growth = cpu50[SIZES[-1]] / cpu50[SIZES[0]]
    disk_growth = disk[SIZES[-1]] / max(disk[SIZES[0]], 1)
    print(f"growth 10,000 → 1,000,000 rows: CPU {growth:.2f}×, disk writes {disk_growth:.2f}×")
    return verdict([
        (f"append CPU at 1,000,000 rows ≤ {GROWTH_TARGET}× the one at 10,000",
         growth <= GROWTH_TARGET),
        (f"disk writes of an append at 1,000,000 rows ≤ {GROWTH_TARGET}× the ones at 10,000",
         disk_growth <= GROWTH_TARGET),
        (f"append at 1,000,000 rows p50 ≤ {APPEND_TARGET_S * 1e3:.0f} ms",
         p50[SIZES[-1]] <= APPEND_TARGET_S),
    ])


if __name__ == "__main__":
    sys.exit(main())
