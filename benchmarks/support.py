"""What the benchmarks share: servers in a child process (off this process's GIL), percentiles, the
exit status from targets met or missed.

A benchmark script re-runs itself with a ``--serve`` argument in a child process; the child starts
its servers and calls :func:`serve_until_stdin_closes`, the parent reads their URLs through
:func:`servers_in_child`.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator, Sequence


def verdict(checks) -> int:
    """Print which targets were met and return the exit status: 1 if any ``(name, met)`` of
    ``checks`` is not met, else 0 (so ``make bench`` fails on a miss)."""
    missed = [name for name, met in checks if not met]
    for name, met in checks:
        print(f"target {'met' if met else 'MISSED'}: {name}")
    if missed:
        print(f"{len(missed)} target(s) missed", file=sys.stderr)
    return 1 if missed else 0


def cpu_seconds(pids) -> float | None:
    """User + system CPU seconds used so far by the processes ``pids`` (from ``/proc``; None
    where there is no ``/proc``, e.g. on Windows or macOS)."""
    try:
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])      # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None


def pct(values, q):
    """The ``q``-th percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def serve_until_stdin_closes(*servers) -> None:
    """In the child: print the started servers' URLs on one line, run until the parent closes our
    stdin, then stop them."""
    print(*(server.url for server in servers), flush=True)
    sys.stdin.read()
    for server in servers:
        server.stop()


@contextlib.contextmanager
def servers_in_child(args: Sequence[str], timeout: float = 30.0) -> Iterator[list[str]]:
    """Run ``python <args>`` (a script serving with :func:`serve_until_stdin_closes`); yield the
    URLs it prints, and stop it on leaving."""
    proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().split()
    finally:
        proc.stdin.close()
        proc.wait(timeout=timeout)
