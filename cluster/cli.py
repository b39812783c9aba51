"""``spoolside cluster`` and ``spoolside simulate``: the headless cluster commands."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

from rules.errors import ClusterError

logger = logging.getLogger(__name__)


def run_cluster(args) -> int:
    """Start the cluster of one and keep it up until Ctrl-C or SIGTERM."""
    from cluster.local import default_worker_count, start_local_cluster

    workers = default_worker_count() if args.workers is None else args.workers
    if workers < 0:
        print("spoolside cluster: --workers must be 0 or more", file=sys.stderr)
        return 2
    try:
        cluster = start_local_cluster(Path(args.root).expanduser(), workers=workers,
                                      rule_port=args.rule_port, data_port=args.data_port,
                                      bind=args.bind, serverfilter=args.serverfilter,
                                      register=True)
    except OSError as exc:
        print(f"spoolside cluster: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"Spoolside cluster {cluster.serverfilter!r} (data root {cluster.root})")
    print(f"rule server: {cluster.ruleserver_url}")
    print(f"data server: {cluster.dataserver_url}")
    print(f"workers: {workers}")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        cluster.stop()
        print("cluster stopped", flush=True)
    return 0


def run_simulate(args) -> int:
    """Spool a simulated series into the cluster's data server, printing progress."""
    from cluster.simulator import SimulatedAcquisition
    from rules.connection import Cluster, default_cluster

    try:
        if args.dataserver:
            cluster = Cluster(args.server or "", args.dataserver)
        else:
            cluster = default_cluster()
        acquisition = SimulatedAcquisition(cluster.data, args.name, frames=args.frames, fps=args.fps,
                                           structure=args.structure, seed=args.seed,
                                           scmos=getattr(args, "scmos", False))
        acquisition.start()
    except (ClusterError, ValueError, FileExistsError, OSError) as exc:
        print(f"spoolside simulate: {exc}", file=sys.stderr)
        return 1
    print(f"spooling {args.frames} frames at {args.fps:g} fps to {acquisition.series_uri}", flush=True)
    try:
        while not acquisition.wait(1.0):
            print(f"  {acquisition.get_n_frames()} / {args.frames} frames", flush=True)
    except KeyboardInterrupt:
        acquisition.stop()
        acquisition.wait()
    if acquisition.error is not None:
        print(f"spoolside simulate: {acquisition.error}", file=sys.stderr)
        return 1
    print(f"done: {acquisition.get_n_frames()} frames in {acquisition.series_uri}")
    return 0
