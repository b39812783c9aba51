"""PYME's "local" name service: sqlite files in the temp folder listing servers on this machine.

A PYME cluster of one (``-a local``) registers its rule server and data servers in
``<temp dir>/_pyme-taskdist.sqlite`` and ``<temp dir>/_pyme-http.sqlite``, table
``dns(name, address, port, creation_time, URI)`` (``pyme-protocol.md`` §0). Reading it lets
Spoolside find such a cluster; writing it lets PYME's clients find Spoolside's embedded one.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

RULESERVER_SERVICE = "_pyme-taskdist"
DATASERVER_SERVICE = "_pyme-http"
#: Overrides the folder of the sqlite files (PYME uses the system temp folder).
DIRECTORY_ENV = "PYME_NAMESERVICE_DIR"
_MAX_NAME = 63


def _database(service_type: str) -> Path:
    folder = os.environ.get(DIRECTORY_ENV) or tempfile.gettempdir()
    return Path(folder) / f"{service_type}.sqlite"


def _connect(service_type: str) -> sqlite3.Connection:
    connection = sqlite3.connect(_database(service_type), timeout=5)
    connection.execute("CREATE TABLE IF NOT EXISTS dns "
                       "(name TEXT, address TEXT, port INTEGER, creation_time FLOAT, URI TEXT)")
    return connection


def service_name(prefix: str, pid: int | None = None) -> str:
    """PYME's service name ``<prefix>:<computer> - PID:<pid>``, cut to 63 characters (PID kept)."""
    tail = f" - PID:{os.getpid() if pid is None else pid}"
    head = f"{prefix}:{socket.gethostname()}"
    return head[:_MAX_NAME - len(tail)] + tail


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False


def register(service_type: str, name: str, address: str, port: int) -> None:
    """Add a server to the local name service."""
    with _connect(service_type) as connection:
        connection.execute("INSERT INTO dns VALUES (?, ?, ?, ?, NULL)",
                           (name, address, int(port), time.time()))
    logger.debug("registered %s at %s:%d in %s", name, address, port, _database(service_type))


def unregister(service_type: str, name: str) -> None:
    """Remove every entry of ``name``."""
    try:
        with _connect(service_type) as connection:
            connection.execute("DELETE FROM dns WHERE name = ?", (name,))
    except sqlite3.Error as exc:
        logger.warning("could not unregister %s: %s", name, exc)


def services(service_type: str) -> dict[str, str]:
    """``{name: "http://address:port"}`` of the live servers registered (newest entry per name).

    Entries whose port no longer accepts connections are deleted, as PYME does.
    """
    if not _database(service_type).exists():
        return {}
    try:
        with _connect(service_type) as connection:
            rows = connection.execute(
                "SELECT name, address, port FROM dns ORDER BY creation_time").fetchall()
    except sqlite3.Error as exc:
        logger.warning("cannot read the local name service %s: %s", _database(service_type), exc)
        return {}
    latest = {name: (address, port) for name, address, port in rows}
    live = {name: f"http://{address}:{port}" for name, (address, port) in latest.items()
            if _port_open(address, port)}
    dead = [name for name in latest if name not in live]
    if dead:  # a cluster that died without unregistering: drop its rows, as PYME does
        try:
            with _connect(service_type) as connection:
                connection.executemany("DELETE FROM dns WHERE name = ?", [(n,) for n in dead])
        except sqlite3.Error as exc:
            logger.warning("cannot drop dead entries from %s: %s", _database(service_type), exc)
    return live


def local_clusters() -> list[tuple[str, str, list[str]]]:
    """The live clusters registered here: ``[(serverfilter, rule server URL, data server URLs)]``.

    Data servers are grouped by their ``[serverfilter]``; a rule server belongs to the cluster
    named in its own name (``PYMERuleServer [<serverfilter>]:...``, Spoolside's), else to the one
    whose data server the same process registered, else, when there is just one rule server, to
    every group (a PYME cluster of one runs them as separate processes)."""
    rules = {n: u for n, u in services(RULESERVER_SERVICE).items() if n.startswith("PYMERuleServer")}
    groups: dict[str, list[tuple[str, str]]] = {}
    for name, url in sorted(services(DATASERVER_SERVICE).items()):
        match = re.match(r"PYMEDataServer \[(.*?)\]", name)
        groups.setdefault(match.group(1) if match else "", []).append((name, url))
    out = []
    for serverfilter, members in sorted(groups.items()):
        pids = {_pid(name) for name, _ in members}
        own = [url for name, url in sorted(rules.items())
               if name.startswith(f"PYMERuleServer [{serverfilter}]:")]
        own = own or [url for name, url in sorted(rules.items())
                      if _pid(name) in pids and not name.startswith("PYMERuleServer [")]
        if own:
            out.append((serverfilter, own[-1], [url for _, url in members]))
        elif len(rules) == 1:
            out.append((serverfilter, next(iter(rules.values())), [url for _, url in members]))
    return out


def _pid(name: str) -> str | None:
    match = re.search(r" - PID:(\d+)$", name)
    return match.group(1) if match else None
