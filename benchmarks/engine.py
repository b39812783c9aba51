"""Engine benchmark: chain push latency, live release delay, RuleGroupWatcher over many rules.

Run ``python benchmarks/engine.py``. The embedded rule and data servers run in a child process (so
they do not share this process's GIL); the engine runs here, as a script or the window would.

1. ``get_rule`` + ``push`` of a three-step chain (localisation → recipe → recipe) on copies of
   PYME's fixture series: p50/p95 latency (metadata uploads, results-name check, create).
2. Live release: a spooler adds frames at 1,000 frames/s and notifies the rule; delay from a
   frame's arrival to the return of the ``/release_rule_tasks`` call that made its task available.
3. ``RuleGroupWatcher`` over 1,000 rules: HTTP requests per poll cycle and cycle time.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support import pct, serve_until_stdin_closes, servers_in_child, verdict  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pyme" / "series.pcs"
SERVERFILTER = "bench"


def serve(root: str) -> None:
    from cluster.dataserver import DataServer
    from cluster.ruleserver import RuleServer
    serve_until_stdin_closes(RuleServer().start(),
                             DataServer(root, serverfilter=SERVERFILTER).start())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_chain_push(cluster, n: int) -> dict:
    import rules
    step1 = rules.LocalisationRuleFactory(analysisMetadata={"Analysis.DetectionThreshold": 2.0})
    step2 = rules.RecipeRuleFactory(recipe="- a: b\n", output_dir="{{spool_dir}}/analysis")
    step3 = rules.RecipeRuleFactory(recipeURI="PYME-CLUSTER://bench/RECIPES/m.yaml",
                                    input_patterns={"input": "{{results_dir}}/{{series_stub}}.tif"})
    step1.chain(step2).chain(step3)
    times = []
    for i in range(n):
        start = time.perf_counter()
        step1.get_rule({"seriesName": f"PYME-CLUSTER://bench/b/s{i:03d}.pcs"}).push(cluster)
        times.append(time.perf_counter() - start)
    return {"n": n, "p50": statistics.median(times), "p95": pct(times, 95), "max": max(times)}


def bench_live_release(cluster, fps: float, seconds: float) -> dict:
    import rules

    class Spooler:
        metadata = {"voxelsize.x": 0.1}

        def __init__(self):
            self.n = 0
            self.done = False
            self.listeners = []
            self.event_logger = type("L", (), {"events": [["StartAq", "0", time.time()]]})()

        def get_n_frames(self):
            return self.n

        def finished(self):
            return self.done

        def add_frame_listener(self, callback):
            self.listeners.append(callback)

    releases: list[tuple[int, float]] = []

    class Timed(rules.SpoolLocalLocalizationRule):
        def _release_new(self):
            released = super()._release_new()
            if released:
                releases.append((self._released_end, time.perf_counter()))
            return released

    spooler = Spooler()
    rule = Timed(spooler, "PYME-CLUSTER://bench/live/s1.pcs", {"Analysis.StartAt": 0},
                 cluster=cluster, poll_interval=1.0).push()
    n = int(fps * seconds)
    arrivals = []
    period = 1.0 / fps
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i * period
        while True:
            now = time.perf_counter()
            if now >= target:
                break
            time.sleep(min(period, target - now))
        spooler.n += 1
        arrivals.append(time.perf_counter())
        for callback in spooler.listeners:
            callback()
    achieved = n / (arrivals[-1] - arrivals[0])
    spooler.done = True
    for callback in spooler.listeners:
        callback()
    deadline = time.monotonic() + 30
    while rule.releasing and time.monotonic() < deadline:
        time.sleep(0.01)
    delays = []
    j = 0
    for i, arrived in enumerate(arrivals):
        while j < len(releases) and releases[j][0] <= i:
            j += 1
        if j < len(releases):
            delays.append(releases[j][1] - arrived)
    info = cluster.rules.queue_info()[rule.rule_id]
    return {"frames": n, "fps": achieved, "batches": len(releases), "p50": statistics.median(delays),
            "p95": pct(delays, 95), "max": max(delays), "posted": info["tasksPosted"]}


def bench_group_watcher(cluster, n_rules: int, cycles: int) -> dict:
    import rules
    from rules.ruleserver_client import make_session
    start = time.perf_counter()
    ids = [cluster.rules.add_rule({"template": '{"id": "{{ruleID}}~{{taskID}}"}'}, max_tasks=10,
                                  release_start=0, release_end=10) for _ in range(n_rules)]
    create = time.perf_counter() - start
    session = make_session()
    count = [0]
    session.hooks["response"].append(lambda r, *a, **k: count.__setitem__(0, count[0] + 1))
    watcher = rules.RuleGroupWatcher(ruleserver=cluster.ruleserver_url, session=session,
                                     autostart=False)
    for rule_id in ids:
        watcher.watch(rule_id)
    per_cycle, times = [], []
    for _ in range(cycles):
        before = count[0]
        t = time.perf_counter()
        result = watcher.poll_once()
        times.append(time.perf_counter() - t)
        per_cycle.append(count[0] - before)
        assert len(result[cluster.ruleserver_url]) == n_rules
    session.close()
    return {"rules": n_rules, "requests_per_cycle": max(per_cycle), "p50": statistics.median(times),
            "p95": pct(times, 95), "create_s": create}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--fps", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()

    import rules
    root = Path(tempfile.mkdtemp(prefix="spoolside-bench-"))
    for i in range(args.pushes):
        shutil.copytree(FIXTURE, root / "b" / f"s{i:03d}.pcs")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        with servers_in_child([__file__, "--serve", str(root)]) as (rs_url, ds_url):
            cluster = rules.Cluster(rs_url, ds_url, serverfilter=SERVERFILTER)
            print(f"python {sys.version.split()[0]}, servers in a child process")
            r = bench_chain_push(cluster, args.pushes)
            print(f"get_rule+push, 3-step chain ({r['n']} pushes): p50 {ms(r['p50'])}, "
                  f"p95 {ms(r['p95'])}, max {ms(r['max'])}")
            checks = []
            r = bench_live_release(cluster, args.fps, args.seconds)
            checks.append(("live release: frame -> task available p95 <= 100 ms",
                           r["p95"] <= 0.100))
            print(f"live release at {r['fps']:.0f} frames/s ({r['frames']} frames, {r['batches']} release "
                  f"calls, {r['posted']} posted): frame → task available p50 {ms(r['p50'])}, "
                  f"p95 {ms(r['p95'])}, max {ms(r['max'])}")
            r = bench_group_watcher(cluster, args.rules, args.cycles)
            print(f"RuleGroupWatcher over {r['rules']} rules: {r['requests_per_cycle']} request(s) per "
                  f"cycle, cycle p50 {ms(r['p50'])}, p95 {ms(r['p95'])} (creating them: "
                  f"{r['create_s']:.1f} s)")
            checks.append(("RuleGroupWatcher: 1 request per cycle", r["requests_per_cycle"] == 1))
            cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return verdict(checks)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit(main())
