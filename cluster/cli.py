"""``spoolside cluster``, ``worker`` and ``simulate``: the headless cluster commands."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from cluster.http_base import Access, is_loopback
from rules.errors import ClusterError
from rules.ruleserver_client import TOKEN_ENV

logger = logging.getLogger(__name__)


def run_cluster(args) -> int:
    """Start the cluster of one and keep it up until Ctrl-C or SIGTERM."""
    from cluster.local import default_worker_count, start_local_cluster

    workers = default_worker_count() if args.workers is None else args.workers
    if workers < 0:
        print("spoolside cluster: --workers must be 0 or more", file=sys.stderr)
        return 2
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV)
    try:
        access = Access.parse(getattr(args, "allow", None) or [], token)
    except ValueError as exc:
        print(f"spoolside cluster: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.bind):
        if not access.networks and not access.token:
            print(f"spoolside cluster: --bind {args.bind} opens the cluster to the network; say "
                  "who may connect with --allow NETWORK (PYME clients and workers there) and/or "
                  "--token TOKEN (Spoolside clients send it; also $SPOOLSIDE_TOKEN)",
                  file=sys.stderr)
            return 2
        allowed = ", ".join(str(n) for n in access.networks) or "no network"
        print(f"WARNING: listening on {args.bind}, beyond this machine: admitted are loopback, "
              f"{allowed}{' and clients sending the token' if access.token else ''}",
              file=sys.stderr, flush=True)
    if token:
        os.environ[TOKEN_ENV] = token  # the worker processes inherit it
    try:
        cluster = start_local_cluster(Path(args.root).expanduser(), workers=workers,
                                      rule_port=args.rule_port, data_port=args.data_port,
                                      bind=args.bind, serverfilter=args.serverfilter,
                                      register=True, access=access)
    except (OSError, RuntimeError) as exc:
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


def _cluster_answers(url: str, timeout: float = 5.0) -> str | None:
    """None when the server at ``url`` answers HTTP at all, else why not."""
    import requests

    try:
        with requests.Session() as session:
            session.trust_env = False
            session.get(url, timeout=timeout)
        return None
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"


def run_worker(args) -> int:
    """Add worker processes to a cluster (Spoolside's or PYME's) until Ctrl-C/SIGTERM, or until
    its rule server has not answered for ``--give-up`` seconds."""
    import time

    from cluster.local import WorkerPool, default_worker_count

    workers = default_worker_count() if args.workers is None else args.workers
    if workers < 1:
        print("spoolside worker: --workers must be 1 or more", file=sys.stderr)
        return 2
    if args.server and args.dataserver:
        server = args.server.rstrip("/")
        dataservers = [u.strip().rstrip("/") for u in args.dataserver.split(",") if u.strip()]
    else:
        from rules.connection import default_cluster

        try:  # $PYME_RULESERVER_URL / $PYME_DATASERVER_URL, or a cluster on this machine
            found = default_cluster()
        except ClusterError as exc:
            print(f"spoolside worker: give the cluster's --server URL and --dataserver URL ({exc})",
                  file=sys.stderr)
            return 2
        server, dataservers = found.ruleserver_url, list(found.dataserver_urls)
    checks = [("rule server", server + "/queue_info")] + [("data server", url + "/")
                                                          for url in dataservers]
    for what, url in checks:
        problem = _cluster_answers(url)
        if problem:
            print(f"spoolside worker: cannot reach the {what} at {url}: {problem}", file=sys.stderr)
            return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pool = WorkerPool(workers, server, dataservers, root=None, serverfilter="",
                      low_priority=args.low_priority).start()
    print(f"{workers} worker processes (PIDs {', '.join(map(str, pool.pids))}) taking tasks from "
          f"{server}, data from {', '.join(dataservers)}")
    print("Press Ctrl-C to stop.", flush=True)
    lost_since: float | None = None
    code = 0
    try:
        while not stop.wait(args.check_interval):
            problem = _cluster_answers(server + "/queue_info")
            if problem is None:
                lost_since = None
                continue
            lost_since = lost_since or time.monotonic()
            gone = time.monotonic() - lost_since
            logger.warning("rule server %s not answering for %.0f s: %s", server, gone, problem)
            if gone >= args.give_up:
                print(f"spoolside worker: lost the cluster: the rule server {server} has not "
                      f"answered for {gone:.0f} s ({problem})", file=sys.stderr)
                code = 1
                break
    finally:
        pool.stop()
        print("workers stopped", flush=True)
    return code


def run_simulate(args) -> int:
    """Spool a simulated series into the cluster's data server, printing progress."""
    from cluster.simulator import SimulatedAcquisition
    from rules.connection import Cluster, default_cluster
    from rules.simulation import CAMERA_CHOICES, SimulationSettings

    try:
        if args.dataserver:
            cluster = Cluster(args.server or "", args.dataserver)
        else:
            cluster = default_cluster()
        settings = SimulationSettings(
            frames=args.frames, fps=args.fps, structure=args.structure,
            emitters_per_frame=args.density, photons=args.photons, background=args.background,
            camera="sCMOS with pixel maps" if args.scmos else CAMERA_CHOICES[args.camera])
        acquisition = SimulatedAcquisition.from_settings(cluster.data, args.name, settings,
                                                         seed=args.seed)
        acquisition.start()
    except (ClusterError, ValueError, FileExistsError, OSError) as exc:
        print(f"spoolside simulate: {exc}", file=sys.stderr)
        return 1
    print(f"spooling {args.frames} frames at {args.fps:g} fps to {acquisition.series_uri}", flush=True)
    try:
        while not acquisition.wait(1.0):
            print(f"  {acquisition.get_n_frames()} / {args.frames} frames, "
                  f"{acquisition.spool_rate():,.0f} frames/s", flush=True)
    except KeyboardInterrupt:
        acquisition.stop()
        acquisition.wait()
    if acquisition.error is not None:
        print(f"spoolside simulate: {acquisition.error}", file=sys.stderr)
        return 1
    print(f"done: {acquisition.get_n_frames()} frames in {acquisition.series_uri}")
    return 0
