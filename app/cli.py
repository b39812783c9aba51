"""The ``spoolside`` command: the window by default, and headless sub-commands.

Each sub-command's work lives in the package it belongs to; this module only parses arguments
and sets up logging, so ``spoolside cluster`` never imports Qt.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from rules.ruleserver_client import TOKEN_ENV
from rules.simulation import CAMERA_CHOICES, STRUCTURES, SimulationSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spoolside", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    _add_cluster_arguments(parser, dest_prefix="global_")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("cluster", help="run the embedded cluster in the foreground")
    p.add_argument("--root", required=True, help="data folder the data server serves")
    p.add_argument("--rule-port", type=int, default=0, help="rule server port (0: a free one)")
    p.add_argument("--data-port", type=int, default=0, help="data server port (0: a free one)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default loopback); any other needs --allow "
                        "and/or --token")
    p.add_argument("--allow", action="append", default=[], metavar="NETWORK",
                   help="network (e.g. 192.168.1.0/24) whose machines may connect without the "
                        "token, as PYME's clients and workers do (repeatable)")
    p.add_argument("--token", metavar="TOKEN",
                   help="shared token Spoolside's clients and workers send (default: "
                        "$SPOOLSIDE_TOKEN)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: cores - 1, at least 1)")
    p.add_argument("--serverfilter", default=None, help="cluster name (default: host name)")

    p = sub.add_parser("worker", help="add analysis worker processes on this PC to a cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: cores - 1, at least 1)")
    p.add_argument("--give-up", type=float, default=120.0, metavar="SECONDS",
                   help="exit when the rule server has not answered for this long (default 120)")
    p.add_argument("--low-priority", action="store_true",
                   help="run the workers below normal priority, so an acquisition on this PC "
                        "always comes first (as the embedded cluster's workers do)")
    p.add_argument("--check-interval", type=float, default=5.0, metavar="SECONDS",
                   help=argparse.SUPPRESS)
    _add_cluster_arguments(p)

    p = sub.add_parser("simulate", help="spool a simulated single-molecule series")
    p.add_argument("name", help="series name, e.g. sim/cells_01 (becomes sim/cells_01.pcs)")
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--fps", type=float, default=100.0)
    defaults = SimulationSettings()
    p.add_argument("--structure", choices=STRUCTURES, default=defaults.structure)
    p.add_argument("--density", type=float, default=defaults.emitters_per_frame, metavar="N",
                   help=f"emitters on per frame (default {defaults.emitters_per_frame:g})")
    p.add_argument("--photons", type=float, default=defaults.photons,
                   help=f"mean photons per emitter and frame (default {defaults.photons:g})")
    p.add_argument("--background", type=float, default=defaults.background,
                   help=f"background photons per pixel and frame (default {defaults.background:g})")
    p.add_argument("--camera", choices=tuple(CAMERA_CHOICES), default="scmos",
                   help="scmos (uniform; default), scmos-maps (per-pixel offset and read noise, "
                        "maps written beside the frames and named in the metadata) or emccd")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--scmos", action="store_true", help="the same as --camera scmos-maps")
    _add_cluster_arguments(p)

    from rules.cli import add_launch_arguments
    add_launch_arguments(sub.add_parser("launch", help="push a chain preset for a series and show progress"))
    from rules.cli import add_import_arguments
    add_import_arguments(sub.add_parser("import", help="upload a TIFF stack, a PYME .h5 file or a "
                                                       ".pcs folder into "
                                                       "the cluster as a PYME series"))
    from rules.cli import add_watch_arguments
    add_watch_arguments(sub.add_parser("watch", help="launch a chain preset on every new series "
                                                     "matching a pattern"))
    return parser


def _add_cluster_arguments(parser: argparse.ArgumentParser, dest_prefix: str = "") -> None:
    parser.add_argument("--server", metavar="URL", dest=dest_prefix + "server",
                        help="rule server of an existing cluster (default: $PYME_RULESERVER_URL, "
                             "else the embedded cluster)")
    parser.add_argument("--dataserver", metavar="URL", dest=dest_prefix + "dataserver",
                        help="data server of that cluster (comma-separated for several)")
    parser.add_argument("--token", metavar="TOKEN", dest=dest_prefix + "token",
                        help="shared token of a cluster bound beyond loopback, sent with every "
                             "request (default: $SPOOLSIDE_TOKEN)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``--server``/``--dataserver`` may stand before or after a sub-command."""
    args = build_parser().parse_args(argv)
    for name in ("server", "dataserver", "token"):
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(args, "global_" + name))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.token:  # every client session (engine, workers) sends it
        os.environ[TOKEN_ENV] = args.token
    if not args.verbose:
        from rules.cli import quiet_http_logs
        quiet_http_logs()
    if args.command == "cluster":
        from cluster.cli import run_cluster
        return run_cluster(args)
    if args.command == "worker":
        from cluster.cli import run_worker
        return run_worker(args)
    if args.command == "simulate":
        from cluster.cli import run_simulate
        return run_simulate(args)
    if args.command == "launch":
        from rules.cli import run_launch
        return run_launch(args)
    if args.command == "import":
        from rules.cli import run_import
        return run_import(args)
    if args.command == "watch":
        from rules.cli import run_watch
        return run_watch(args)
    from app.gui import run_gui
    return run_gui(args)


if __name__ == "__main__":
    sys.exit(main())
