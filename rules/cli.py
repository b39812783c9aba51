"""``spoolside launch PRESET --series URI [--server URL] [--dataserver URL] [--watch]``.

Loads a chain preset, builds the launch context for the series, pushes the chain and prints the
rule IDs; with ``--watch``, prints a progress line per rule until the whole chain (follow-ons
included) is done. Exit code 0 on success, 1 on any error or failed rule; errors are one line.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from .chain import rule_for_series
from .connection import Cluster, default_cluster
from .errors import ClusterError, ClusterUnreachable
from .patterns import PatternError
from .presets import PresetError, load_preset
from .uris import check_name, is_cluster_uri
from .watchers import RuleStatus

logger = logging.getLogger(__name__)

#: Seconds a rule may be missing from the queue listing before it counts as gone.
LISTING_GRACE = 12.0


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
    return (f"{label} {status.rule_id}: {status.state} posted={status.posted} running={status.running} "
            f"completed={status.completed} failed={status.failed}")


def watch_chain(cluster: Cluster, root_id: str, n_steps: int, *, interval: float = 1.0,
                timeout: float | None = None, out=None) -> bool:
    """Print progress of a chain (to ``out``, default the current ``sys.stdout``) until every step
    is done; True when no rule failed."""
    if out is None:
        out = sys.stdout
    client = cluster.rules
    chain = [root_id]
    last: dict[str, str] = {}
    final: dict[str, RuleStatus] = {}
    first: dict[str, float] = {}
    seen: set[str] = set()
    unreachable = False
    start = time.monotonic()
    ok = True
    while True:
        try:
            # follow-ons first, so every rule found is in the listing fetched next
            while len(chain) < n_steps:
                ids = client.followon_ids(chain[-1])
                if ids is None:
                    print("note: this rule server does not report follow-on rules; watching the "
                          "first step only", file=out)
                    n_steps = len(chain)
                    break
                if not ids:
                    break
                chain.append(ids[0])
            info = client.queue_info()
        except ClusterUnreachable as exc:
            if not unreachable:
                print(f"rule server unreachable ({exc.reason or exc}); still trying", file=out,
                      flush=True)
            unreachable = True
            if timeout is not None and time.monotonic() - start > timeout:
                print(f"error: chain not finished after {timeout:g} s", file=out)
                return False
            time.sleep(interval)
            continue
        if unreachable:
            print("rule server reachable again", file=out, flush=True)
            unreachable = False
        now = time.monotonic()
        statuses = []
        for step, rule_id in enumerate(chain, start=1):
            entry = info.get(rule_id)
            if entry is not None:
                status = RuleStatus.from_info(rule_id, entry)
            elif rule_id in final:  # finished, then dropped after the server's retention time
                status = final[rule_id]
            elif rule_id not in seen and now - first.setdefault(rule_id, now) < LISTING_GRACE:
                status = RuleStatus.from_info(rule_id, {})  # not listed yet (PYME caches 5 s)
            else:
                status = RuleStatus.gone(rule_id)
            if entry is not None:
                seen.add(rule_id)
            if status.terminal:
                final[rule_id] = status
            statuses.append(status)
            line = _line(status, step)
            if last.get(rule_id) != line:
                print(line, file=out, flush=True)
                last[rule_id] = line
        if any(s.state == "failed" for s in statuses):
            ok = False  # follow-ons still run after failed tasks: keep watching them
        if any(s.state in ("aborted", "expired") for s in statuses):
            return False
        if len(chain) >= n_steps and all(s.terminal for s in statuses):
            return ok
        if timeout is not None and time.monotonic() - start > timeout:
            print(f"error: chain not finished after {timeout:g} s", file=out)
            return False
        time.sleep(interval)


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
        ok = watch_chain(cluster, rule._pushed_id(), len(factories), interval=args.interval,
                         timeout=args.timeout)
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
                             "a folder")
    parser.add_argument("--server", help="rule server URL (default: $PYME_RULESERVER_URL or discovery)")
    parser.add_argument("--dataserver", help="data server URL(s), comma separated")
    parser.add_argument("--serverfilter", help="cluster name used in URIs")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between looks")
    return parser


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
        while stop is None or not stop.is_set():
            time.sleep(0.2)
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


def main(argv=None) -> int:
    """Entry point for ``python -m rules.cli``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_launch(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
