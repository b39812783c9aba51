"""PZF decode (and encode) speed on one core: 256×256 uint16 single-molecule frames.

Frames as PYME Acquire spools them: Huffman-coded (``DataCompression`` 1) and Huffman-coded with
sqrt quantisation (offset 100 ADU, scale 1 ADU, as PYME's spool panel sets for a 0.5 e⁻/ADU camera).
Rates are frames per second of CPU time of this one process (``decode_frame``: header, Huffman
decode, dequantisation, reshape), so that other load on a shared machine does not count against
them; wall-clock rates are printed beside. Best of ``--repeats`` runs.
Targets: Huffman ≥ 1,000 frames/s (PYME's pymecompress ~560/s here), quantised ≥ 1,600 frames/s.
Exits non-zero when a target is missed.

Run: ``python benchmarks/pzf_decode.py [--frames 200] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.localisation.synthetic import simulate_frames  # noqa: E402
from rules.pzf import COMPRESSION_HUFFMAN, QUANT_SQRT, decode_frame, encode_frame  # noqa: E402

TARGETS = {"Huffman": 1000.0, "Huffman + sqrt quantisation": 1600.0}


def rate(work, n: int, repeats: int) -> tuple[float, float]:
    """Best (CPU-time, wall-clock) frames/s of ``work()`` over ``repeats`` runs."""
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        work()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        best_cpu, best_wall = max(best_cpu, n / cpu), max(best_wall, n / wall)
    return best_cpu, best_wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    frames, _, _ = simulate_frames(args.frames, seed=1)
    codecs = {"Huffman": {"compression": COMPRESSION_HUFFMAN},
              "Huffman + sqrt quantisation": {"compression": COMPRESSION_HUFFMAN,
                                              "quantization": QUANT_SQRT, "quant_offset": 100.0,
                                              "quant_scale": 1.0}}
    failed = False
    print(f"{args.frames} frames 256×256 uint16, best of {args.repeats}")
    for name, kwargs in codecs.items():
        files = [encode_frame(f, frame_num=i, **kwargs) for i, f in enumerate(frames)]
        decode_frame(files[0])  # compile (or load the cached compiled code) first
        encode_cpu, encode_wall = rate(lambda: [encode_frame(f, **kwargs) for f in frames],
                                       len(frames), args.repeats)
        decode_cpu, decode_wall = rate(lambda: [decode_frame(b) for b in files], len(files),
                                       args.repeats)
        ratio = sum(map(len, files)) / frames.nbytes
        ok = decode_cpu >= TARGETS[name]
        failed |= not ok
        print(f"{name}: decode {decode_cpu:,.0f} frames/s CPU ({decode_wall:,.0f} wall), "
              f"encode {encode_cpu:,.0f} frames/s CPU ({encode_wall:,.0f} wall), "
              f"size {ratio:.0%} of raw; target ≥ {TARGETS[name]:,.0f} decoded/s "
              f"{'met' if ok else 'MISSED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
