"""Import benchmark: a 2,000-frame 256×256 uint16 TIFF stack into the data server as a PYME series.

``spoolside import``'s engine (``rules.importer``): reading and checking the whole stack, then
metadata.json, 2,000 Huffman-coded PZF frames and events.json PUT to a data server running in a
child process on loopback. Frames are shot noise over a 100 ADU offset with sparse bright spots,
like single-molecule data. Reports frames/s end to end (best of ``--repeats``).
Target: ≥ 200 frames/s (faster than a typical acquisition spools).

Run: ``python benchmarks/import_tiff.py [--frames 2000] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import serve_until_stdin_closes, servers_in_child, verdict  # noqa: E402

TARGET_FPS = 200.0
CAMERA = {"Camera.ADOffset": 100.0, "Camera.ElectronsPerCount": 0.5}


def serve(root: str) -> None:
    from cluster.dataserver import DataServer
    serve_until_stdin_closes(DataServer(root, serverfilter="bench").start())


def make_stack(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    stack = (rng.poisson(50, (frames, 256, 256)) * 2 + 100).astype(np.uint16)
    for t in range(frames):  # ~30 spots a frame
        ys, xs = rng.integers(4, 252, 30), rng.integers(4, 252, 30)
        stack[t, ys, xs] += 400
    tifffile.imwrite(path, stack, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.1,
                                                      "PhysicalSizeY": 0.1})


def main() -> int:
    from rules.dataserver_client import DataClient
    from rules.importer import import_series, open_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "stack.ome.tif"
        make_stack(stack, args.frames)
        root = Path(tmp) / "data"
        root.mkdir()
        best = 0.0
        with servers_in_child([__file__, "--serve", str(root)]) as (url,), \
                DataClient([url], "bench") as client:
            for run in range(args.repeats):
                t0 = time.perf_counter()
                source = open_source(stack)
                import_series(source, client, f"bench/run{run}", CAMERA)
                elapsed = time.perf_counter() - t0
                rate = args.frames / elapsed
                best = max(best, rate)
                print(f"run {run}: {args.frames} frames in {elapsed:.2f} s = {rate:,.0f} frames/s "
                      f"({stack.stat().st_size / 2**20 / elapsed:,.0f} MiB/s of TIFF)")
    print(f"best: {best:,.0f} frames/s")
    return verdict([(f"import ≥ {TARGET_FPS:,.0f} frames/s", best >= TARGET_FPS)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit(main())
