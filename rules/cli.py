"""``spoolside launch PRESET --series URI [--server URL] [--dataserver URL] [--watch]``.

Loads a chain preset, builds the launch context for the series, pushes the chain and prints the
rule IDs; with ``--watch``, prints a progress line per rule until the whole chain (follow-ons
included) is done. Exit code 0 on success, 1 on any error or failed rule; errors are one line.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from .chain import rule_for_series
from .chainwatch import ChainProgress, ChainWatch, chain_followons
from .connection import Cluster, default_cluster
from .errors import ClusterError, ClusterUnreachable, short_reason
from .patterns import PatternError
from .presets import PresetError, load_preset
from .uris import check_name, is_cluster_uri
from .watchers import RuleStatus

logger = logging.getLogger(__name__)

#: Lines of a failed step's error log printed by ``--watch``.
LOG_LINES = 12
#: Seconds ``--watch`` waits at a stretch for a rule server that does not answer.
GIVE_UP_UNREACHABLE = 300.0


def add_launch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``launch`` arguments to ``parser`` (used by ``app.cli``)."""
    parser.add_argument("preset", help="chain preset YAML ([[FactoryClass, settings], ...])")
    parser.add_argument("--series", required=True, help="series URI, PYME-CLUSTER://<filter>/<path>.pcs")
    parser.add_argument("--server", help="rule server URL (default: $PYME_RULESERVER_URL or discovery)")
    parser.add_argument("--dataserver", help="data server URL(s), comma separated")
    parser.add_argument("--serverfilter", help="cluster name used in URIs")
    parser.add_argument("--watch", action="store_true", help="print progress until the chain finishes")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between progress lines")
    parser.add_argument("--timeout", type=float, default=None, help="give up watching after this many s")
    return parser


def _cluster(args) -> Cluster:
    if args.server:
        if not args.dataserver:
            raise ValueError("--server needs --dataserver too (the data server holding the series)")
        return Cluster(args.server, args.dataserver, serverfilter=args.serverfilter)
    if args.dataserver:
        raise ValueError("--dataserver needs --server too")
    return default_cluster()


def _line(status: RuleStatus, step: int | None) -> str:
    label = f"step {step}" if step is not None else "rule"
    line = (f"{label} {status.rule_id}: {status.state} posted={status.posted} running={status.running} "
            f"completed={status.completed} failed={status.failed}")
    return line + (f" ({status.partial_input})" if status.partial_input else "")


def _print_log_head(cluster: Cluster, rule_id: str, out, lines: int = LOG_LINES) -> None:
    """The first ``lines`` lines of a rule's error log (``LOGS/rules/<ruleID>.log``, §2.4)."""
    path = f"LOGS/rules/{rule_id}.log"
    try:
        text = cluster.data.get_file(path).decode("utf-8", "replace")
    except FileNotFoundError:
        print(f"  (no error log at {path})", file=out)
        return
    except ClusterError as exc:
        print(f"  (error log {path} not readable: {exc})", file=out)
        return
    head = text.splitlines()[:lines]
    print(f"  first lines of {path}:", file=out)
    for line in head:
        print(f"  | {line}", file=out)


def watch_chain(cluster: Cluster, root_id: str, followons: list[dict], *, interval: float = 1.0,
                timeout: float | None = None, give_up: float = GIVE_UP_UNREACHABLE,
                out=None) -> bool:
    """Print progress of a chain (to ``out``, default the current ``sys.stdout``) until every step
    has ended; True when every step finished without failed tasks.

    ``followons`` are the posted rule's ``on_completion`` specs (:func:`chain_followons`). An
    unanswering rule server is waited for (one line when it goes and comes back) up to ``give_up``
    seconds at a stretch; a failed step is named with the first lines of its error log.
    """
    if out is None:
        out = sys.stdout
    watch = ChainWatch(cluster.rules, root_id, followons)
    last: dict[str, str] = {}
    start = time.monotonic()
    down_since = None
    while True:
        try:
            progress = watch.poll()
        except ClusterUnreachable as exc:
            now = time.monotonic()
            if down_since is None:
                down_since = now
                print(f"rule server {cluster.ruleserver_url} not answering "
                      f"({short_reason(exc.reason or str(exc))}); still trying", file=out, flush=True)
            elif now - down_since > give_up:
                print(f"error: rule server {cluster.ruleserver_url} not answering for "
                      f"{give_up:g} s; giving up", file=out, flush=True)
                return False
        else:
            if down_since is not None:
                print(f"rule server {cluster.ruleserver_url} answering again", file=out, flush=True)
                down_since = None
            for step, status in enumerate(progress.statuses, start=1):
                line = _line(status, step)
                if last.get(status.rule_id) != line:
                    print(line, file=out, flush=True)
                    last[status.rule_id] = line
            if progress.outcome is not None:
                return _report(cluster, progress, out)
        if timeout is not None and time.monotonic() - start > timeout:
            print(f"error: chain not finished after {timeout:g} s", file=out)
            return False
        time.sleep(interval)


def _report(cluster: Cluster, progress: ChainProgress, out) -> bool:
    """Say how the chain ended (which step failed, with its log); True when it finished."""
    if progress.message:
        print(progress.message, file=out)
    for step in progress.failed_steps:
        status = progress.statuses[step - 1]
        print(f"step {step} ({status.rule_id}): {status.failed} of {status.posted} tasks failed",
              file=out)
        if status.partial_input:
            print(f"  it ran on a {status.partial_input}", file=out)
        _print_log_head(cluster, status.rule_id, out)
    out.flush()
    return progress.ok


def quiet_http_logs() -> None:
    """No urllib3 retry warnings on a terminal: the engine's errors say it in one line."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def run_launch(args) -> int:
    """Run ``spoolside launch``; ``args`` is a parsed namespace or a list of strings. Returns 0 or 1."""
    if not isinstance(args, argparse.Namespace):
        parser = add_launch_arguments(argparse.ArgumentParser(prog="spoolside launch"))
        args = parser.parse_args(list(args))
    cluster = None
    try:
        factories = load_preset(args.preset)
        check_name(args.series)
        if not is_cluster_uri(args.series):
            raise ValueError(f"--series must be a PYME-CLUSTER:// URI, got {args.series!r}")
        cluster = _cluster(args)
        rule = rule_for_series(factories, args.series)
        rule.push(cluster)
        print(f"pushed rule {rule.rule_id} ({len(factories)} step{'s' if len(factories) != 1 else ''})",
              flush=True)
        if not args.watch:
            if rule.releasing:
                print("series still spooling: releasing tasks as frames arrive", flush=True)
            while rule.releasing:
                time.sleep(0.2)
            if rule.loop_error is not None:
                print(f"error: {rule.loop_error}", file=sys.stderr)
                return 1
            return 0
        ok = watch_chain(cluster, rule._pushed_id(), chain_followons(rule.rule),
                         interval=args.interval, timeout=args.timeout)
        rule.cleanup()
        if rule.loop_error is not None:
            print(f"error: {rule.loop_error}", file=sys.stderr)
            return 1
        print("chain finished" if ok else "chain failed", flush=True)
        return 0 if ok else 1
    except (PresetError, PatternError, ClusterError, ValueError, TypeError, FileExistsError,
            FileNotFoundError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.close()


def add_watch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``watch`` arguments (hands-free analysis) to ``parser`` (used by ``app.cli``)."""
    parser.add_argument("preset", help="chain preset YAML ([[FactoryClass, settings], ...])")
    parser.add_argument("--pattern", required=True,
                        help="series to analyse: a glob on the cluster path (e.g. 'auto/*.pcs') or "
                             "a folder; {{date}} is today's PYME Acquire day folder (2026_1_5), "
                             "so '*/{{date}}/*.pcs' follows today's acquisitions")
    parser.add_argument("--server", help="rule server URL (default: $PYME_RULESERVER_URL or discovery)")
    parser.add_argument("--dataserver", help="data server URL(s), comma separated")
    parser.add_argument("--serverfilter", help="cluster name used in URIs")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between looks")
    return parser


def _stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C (SIGINT) or SIGTERM. The handlers are installed explicitly, because a
    process started in the background inherits SIGINT ignored and would never see Ctrl-C."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stop.set())
    return stop


def run_watch(args, stop=None) -> int:
    """Run ``spoolside watch``: launch the preset on every new matching series, printing each
    launch, until Ctrl-C (or until the ``stop`` event is set). Returns 0, or 1 on a bad start."""
    from .autolaunch import AutoLauncher, Launch

    if not isinstance(args, argparse.Namespace):
        args = add_watch_arguments(argparse.ArgumentParser(prog="spoolside watch")).parse_args(
            list(args))

    def report(launch: Launch) -> None:
        if launch.error is None:
            print(f"launched rule {launch.rule_id} on {launch.series_uri}", flush=True)
        else:
            print(f"error: launch on {launch.series_uri} failed: {launch.error}", flush=True)

    cluster = None
    launcher = None
    try:
        factories = load_preset(args.preset)
        cluster = _cluster(args)
        launcher = AutoLauncher(cluster, factories, args.pattern, on_launch=report,
                                interval=args.interval)
        launcher.poll()  # series already there are left alone; an unreachable cluster fails here
        print(f"watching {launcher.glob} on {cluster.ruleserver_url} for new series "
              "(Ctrl-C to stop)", flush=True)
        launcher.start()
        if stop is None:
            stop = _stop_on_signals()
        while not stop.wait(0.2):
            pass
        print("stopped watching", flush=True)
        return 0
    except (PresetError, ClusterError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped watching", flush=True)
        return 0
    finally:
        if launcher is not None:
            launcher.stop()
        if cluster is not None:
            cluster.close()


def add_import_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``import`` arguments (local data into the cluster) to ``parser``."""
    parser.add_argument("source", help="a TIFF / OME-TIFF stack or ImageJ hyperstack, or a .pcs "
                                       "series folder")
    parser.add_argument("--name", required=True, help="series name on the cluster, e.g. sim/x "
                                                      "(becomes sim/x.pcs)")
    parser.add_argument("--pixel-size", type=float, metavar="NM",
                        help="pixel size in nm (required when the file does not give it)")
    parser.add_argument("--adu-offset", type=float, metavar="ADU",
                        help="camera offset, Camera.ADOffset (required when the file does not give it)")
    parser.add_argument("--e-per-adu", type=float, metavar="E",
                        help="photo-electrons per ADU, Camera.ElectronsPerCount (required when "
                             "the file does not give it)")
    parser.add_argument("--read-noise", type=float, metavar="E", help="read noise in e⁻")
    parser.add_argument("--em-gain", type=float, metavar="GAIN", help="true EM gain (EMCCD)")
    parser.add_argument("--server", help="rule server URL (default: $PYME_RULESERVER_URL or discovery)")
    parser.add_argument("--dataserver", help="data server URL(s), comma separated")
    parser.add_argument("--serverfilter", help="cluster name used in URIs")
    return parser


def import_overrides(args) -> dict:
    """The metadata the ``import`` options give (only those given)."""
    md = {"Camera.ADOffset": args.adu_offset, "Camera.ElectronsPerCount": args.e_per_adu,
          "Camera.ReadNoise": args.read_noise, "Camera.TrueEMGain": args.em_gain}
    if args.pixel_size is not None:
        md["voxelsize.x"] = md["voxelsize.y"] = args.pixel_size / 1e3
    return {key: value for key, value in md.items() if value is not None}


def run_import(args) -> int:
    """Run ``spoolside import``: check the file, upload it as a series with progress. 0 or 1."""
    from .importer import ImportDataError, import_series, missing_metadata, open_source

    if not isinstance(args, argparse.Namespace):
        args = add_import_arguments(argparse.ArgumentParser(prog="spoolside import")).parse_args(
            list(args))
    cluster = None
    try:
        source = open_source(args.source)
        overrides = import_overrides(args)
        missing = missing_metadata(source, overrides)
        if missing:
            options = {"voxelsize.x": "--pixel-size NM", "voxelsize.y": "--pixel-size NM",
                       "Camera.ADOffset": "--adu-offset ADU",
                       "Camera.ElectronsPerCount": "--e-per-adu E"}
            needed = list(dict.fromkeys(options[key] for key in missing))
            print(f"error: {source.path.name} does not give {', '.join(missing)}: pass "
                  f"{' '.join(needed)}", file=sys.stderr)
            return 1
        cluster = _cluster(args)
        print(f"importing {source.n_frames} frames ({source.frame_shape[0]}×"
              f"{source.frame_shape[1]} {source.dtype}, {source.kind}) as {args.name}.pcs",
              flush=True)
        step = max(1, source.n_frames // 10)

        def report(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                print(f"  {done} / {total} frames", flush=True)

        series = import_series(source, cluster.data, args.name, overrides, progress=report)
        print(f"done: PYME-CLUSTER://{cluster.serverfilter}/{series}", flush=True)
        return 0
    except (ImportDataError, ClusterError, ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.close()


def main(argv=None) -> int:
    """Entry point for ``python -m rules.cli``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_http_logs()
    return run_launch(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
