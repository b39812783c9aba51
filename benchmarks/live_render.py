"""Benchmark: CPU time of one live-view render update, part by part (no cluster, one thread).

A 2048×2048 canvas (25.6 µm at 13 nm, as the live view makes for a 256×256 camera at 100 nm)
already holding 300,000 localisations; each update adds 6,000 new ones spread over the whole field
(one update's worth at 200 frames/s × 30 per frame, half a second) and makes the Gaussian render's
pictures as :class:`widgets.live_view.LiveSource` does: add, the blurred image, contrast levels,
colouring into new QImages with their overviews. CPU time of this process (``time.process_time``;
pin it with ``taskset -c 1`` on a shared machine), median of the updates; and the RSS over them.

Target: the render's CPU time per update ≤ 60 ms (so read + render + the 0.5 s interval stay
within the live view's 1 s), and no RSS growth over the updates beyond 8 MiB.

    QT_QPA_PLATFORM=offscreen taskset -c 1 python benchmarks/live_render.py [--updates 60]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gui import rss_mib  # noqa: E402
from benchmarks.support import pct, verdict  # noqa: E402
from rules import render_kernels  # noqa: E402
from rules.render import DensityCanvas, contrast_levels, pixel_size_for  # noqa: E402
from widgets.image_canvas import Display, coloured_images  # noqa: E402

TARGET_MS = 60.0
FIELD_NM = 25_600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--points", type=int, default=6000, help="new localisations per update")
    args = parser.parse_args()
    QApplication.instance() or QApplication(sys.argv)
    started = time.process_time()
    render_kernels.preload()
    load_s = time.process_time() - started
    rng = np.random.default_rng(0)
    canvas = DensityCanvas(pixel_size_for(FIELD_NM * 1.05))

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.uniform(0, FIELD_NM, n), rng.uniform(0, FIELD_NM, n)
    canvas.add(*batch(300_000))
    display = Display()
    started = time.process_time()
    coloured_images(canvas.image(display.render, 10.0), display)
    first_ms = 1000 * (time.process_time() - started)
    parts: dict[str, list[float]] = {"add": [], "image": [], "levels": [], "colour": [], "total": []}
    rss = []
    for _ in range(args.updates):
        x, y = batch(args.points)
        t0 = time.process_time()
        canvas.add(x, y)
        t1 = time.process_time()
        image = canvas.image(display.render, 10.0)
        t2 = time.process_time()
        contrast_levels(image, display.percentile)
        t3 = time.process_time()
        coloured_images(image, display)  # levels again, then the colouring
        t4 = time.process_time()
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3 - (t3 - t2),
                                        t4 - t0 - (t3 - t2))):
            parts[key].append(1000 * seconds)
        rss.append(rss_mib())
    print(f"canvas {canvas.counts.shape[1]}×{canvas.counts.shape[0]} px, "
          f"{canvas.total:,} localisations, +{args.points:,} per update, {args.updates} updates; "
          f"loops loaded in {load_s:.2f} s CPU; first picture (blur of the whole canvas) "
          f"{first_ms:.0f} ms; full blurs {canvas.rebuilds}")
    print("CPU per update, median (p95) ms: " + "; ".join(
        f"{key} {pct(values, 50):.1f} ({pct(values, 95):.1f})" for key, values in parts.items()))
    growth = rss[-1] - rss[len(rss) // 4]
    print(f"RSS {rss[0]:.0f} → {rss[-1]:.0f} MiB (growth after the first quarter {growth:+.1f} MiB)")
    return verdict([(f"render CPU per update (median) <= {TARGET_MS:g} ms",
                     pct(parts["total"], 50) <= TARGET_MS),
                    ("RSS flat over the updates (<= 8 MiB growth after the first quarter)",
                     growth <= 8)])


if __name__ == "__main__":
    sys.exit(main())
