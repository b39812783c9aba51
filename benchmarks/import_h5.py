"""Import memory benchmark: a large PYME ``.h5`` series file (raw ``/ImageData``) into the data server.

``spoolside import``'s engine (``rules.importer``) checks the whole file, then uploads it frame by
frame to a data server running in a child process on loopback. The file (default 1,000 frames of
512×512 uint16 = 500 MiB of pixels) is written chunk by chunk, so this process' peak RSS before
the import is its baseline; the figure is the peak RSS growth during the import (``ru_maxrss``).
Target: growth ≤ 64 MiB whatever the file's size (frames are streamed, never read whole), and the
frames uploaded intact (first and last decoded and compared).

Run: ``python benchmarks/import_h5.py [--frames 1000] [--size 512]``.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import serve_until_stdin_closes, servers_in_child, verdict  # noqa: E402

TARGET_GROWTH_MIB = 64.0
CAMERA = {"voxelsize.x": 0.1, "voxelsize.y": 0.1, "Camera.ADOffset": 100.0,
          "Camera.ElectronsPerCount": 0.5}


def serve(root: str) -> None:
    from cluster.dataserver import DataServer
    serve_until_stdin_closes(DataServer(root, serverfilter="bench").start())


def _frames(t0: int, n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(t0)
    return (rng.poisson(50, (n, size, size)) * 2 + 100).astype(np.uint16)


def make_h5(path: Path, frames: int, size: int) -> None:
    """A PYME .h5 series with a (t, x, y) /ImageData array, appended 16 frames at a time."""
    import tables

    with tables.open_file(str(path), "w") as h5:
        data = h5.create_earray(h5.root, "ImageData", tables.UInt16Atom(), (0, size, size),
                                chunkshape=(1, size, size))
        for t0 in range(0, frames, 16):
            data.append(_frames(t0, min(16, frames - t0), size))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    from rules.dataserver_client import DataClient
    from rules.importer import import_series, open_source
    from rules.pzf import COMPRESSION_HUFFMAN, decode_frame, encode_frame

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    pixels_mib = args.frames * args.size ** 2 * 2 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.h5"
        make_h5(path, args.frames, args.size)
        root = Path(tmp) / "data"
        root.mkdir()
        with servers_in_child([__file__, "--serve", str(root)]) as (url,), \
                DataClient([url], "bench") as client:
            # compile the Huffman coder first (numba's compilation is a one-off of ~100 MiB)
            decode_frame(encode_frame(_frames(0, 1, args.size)[0], compression=COMPRESSION_HUFFMAN))
            before = peak_rss_mib()
            t0 = time.perf_counter()
            source = open_source(path)
            import_series(source, client, "bench/big", CAMERA)
            elapsed = time.perf_counter() - t0
            growth = peak_rss_mib() - before
            first = decode_frame((root / "bench/big.pcs/frame00000.pzf").read_bytes())
            last = decode_frame((root / f"bench/big.pcs/frame{args.frames - 1:05d}.pzf").read_bytes())
        intact = (np.array_equal(first, _frames(0, 1, args.size)[0])
                  and np.array_equal(last, _frames((args.frames - 1) // 16 * 16,
                                                   (args.frames - 1) % 16 + 1, args.size)[-1]))
    print(f"{args.frames} frames of {args.size}×{args.size} uint16 ({pixels_mib:,.0f} MiB of pixels) "
          f"in {elapsed:.1f} s = {args.frames / elapsed:,.0f} frames/s; peak RSS grew "
          f"{growth:,.0f} MiB (baseline {before:,.0f} MiB) = {growth / pixels_mib:.1%} of the pixels")
    return verdict([(f"peak RSS growth ≤ {TARGET_GROWTH_MIB:.0f} MiB", growth <= TARGET_GROWTH_MIB),
                    ("first and last frames uploaded intact", intact)])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit(main())
