"""Which cluster the engine talks to: :class:`Cluster` and the process-wide default."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

from . import nameservice
from .dataserver_client import DataClient
from .errors import ClusterError
from .ruleserver_client import RuleServerClient

logger = logging.getLogger(__name__)

RULESERVER_ENV = "PYME_RULESERVER_URL"
DATASERVER_ENV = "PYME_DATASERVER_URL"
RULESERVER_SERVICE = "_pyme-taskdist._tcp.local."
DATASERVER_SERVICE = "_pyme-http._tcp.local."


def local_serverfilter() -> str:
    """This machine's cluster name, PYME's default serverfilter: the computer's host name."""
    return socket.gethostname()


class Cluster:
    """A rule server plus one or several data servers; clients are created on first use.

    Parameters
    ----------
    ruleserver
        ``http://host:port`` of the rule server.
    dataserver
        one data server URL, a comma-separated string or a list of URLs.
    serverfilter
        the cluster name used in ``PYME-CLUSTER://`` URIs; default :func:`local_serverfilter`.
    """

    def __init__(self, ruleserver: str, dataserver: str | list[str],
                 serverfilter: str | None = None):
        self.ruleserver_url = ruleserver.rstrip("/")
        urls = dataserver.split(",") if isinstance(dataserver, str) else list(dataserver)
        self.dataserver_urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not self.dataserver_urls:
            raise ValueError("a cluster needs at least one data server URL")
        self.serverfilter = local_serverfilter() if serverfilter is None else serverfilter
        self._lock = threading.Lock()
        self._rules: RuleServerClient | None = None
        self._data: DataClient | None = None

    @property
    def rules(self) -> RuleServerClient:
        with self._lock:
            if self._rules is None:
                self._rules = RuleServerClient(self.ruleserver_url)
            return self._rules

    @property
    def data(self) -> DataClient:
        with self._lock:
            if self._data is None:
                self._data = DataClient(self.dataserver_urls, self.serverfilter)
            return self._data

    def close(self) -> None:
        with self._lock:
            for client in (self._rules, self._data):
                if client is not None:
                    client.close()
            self._rules = self._data = None

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Cluster(ruleserver={self.ruleserver_url!r}, dataserver={self.dataserver_urls!r}, "
                f"serverfilter={self.serverfilter!r})")


_default: Cluster | None = None
_default_lock = threading.Lock()


def set_default_cluster(cluster: Cluster | None) -> None:
    """Make ``cluster`` the one :func:`default_cluster` returns (None forgets it)."""
    global _default
    with _default_lock:
        _default = cluster


def default_cluster() -> Cluster:
    """The cluster set with :func:`set_default_cluster`, else from the environment, else zeroconf.

    Raises
    ------
    ClusterError
        when none is set, the environment variables are absent and discovery found nothing.
    """
    global _default
    with _default_lock:
        if _default is not None:
            return _default
        rule_url = os.environ.get(RULESERVER_ENV, "").strip()
        data_urls = os.environ.get(DATASERVER_ENV, "").strip()
        if rule_url and data_urls:
            _default = Cluster(rule_url, data_urls)
            return _default
        discovered = _discover_local() or _discover()
        if discovered is not None:
            _default = discovered
            return _default
    raise ClusterError(
        "no cluster configured: call rules.set_default_cluster(rules.Cluster(ruleserver=URL, "
        f"dataserver=URL)), or set {RULESERVER_ENV} and {DATASERVER_ENV} (a comma-separated list "
        "of data servers is allowed), or start one on this machine with `spoolside cluster`, or "
        "install the optional 'zeroconf' package to discover a PYME cluster on the local network")


def _discover_local() -> Cluster | None:
    """The cluster registered in PYME's local (sqlite) name service on this machine, if any;
    several are an error that lists them (a series must never be spread over two)."""
    clusters = nameservice.local_clusters()
    if not clusters:
        return None
    if len(clusters) > 1:
        listed = "; ".join(f"{sf!r}: --server {rule} --dataserver {','.join(data)}"
                           for sf, rule, data in clusters)
        raise ClusterError(
            f"{len(clusters)} clusters run on this machine ({listed}); choose one with --server "
            f"and --dataserver, or set {RULESERVER_ENV} and {DATASERVER_ENV}")
    serverfilter, rule_url, data_urls = clusters[0]
    logger.info("found a local cluster: rule server %s, data servers %s", rule_url, data_urls)
    return Cluster(rule_url, data_urls, serverfilter=serverfilter or None)


def _discover(wait_s: float = 1.5) -> Cluster | None:
    """Find a rule server and data servers by zeroconf (PYME's service types); None if impossible."""
    try:
        import zeroconf  # optional dependency: imported only when discovery is wanted
    except ImportError:
        logger.debug("zeroconf not installed: no cluster discovery")
        return None
    found: dict[str, dict[str, str]] = {RULESERVER_SERVICE: {}, DATASERVER_SERVICE: {}}
    zc = zeroconf.Zeroconf()
    try:
        listener = _Listener(found)
        browsers = [zeroconf.ServiceBrowser(zc, kind, listener) for kind in found]
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not (found[RULESERVER_SERVICE]
                                                   and found[DATASERVER_SERVICE]):
            time.sleep(0.1)
        for browser in browsers:
            browser.cancel()
    finally:
        zc.close()
    here = local_serverfilter()
    rule_servers = {n: u for n, u in found[RULESERVER_SERVICE].items()
                    if n.startswith("PYMERuleServer")}
    if not rule_servers or not found[DATASERVER_SERVICE]:
        logger.info("zeroconf discovery found no complete cluster: %s", found)
        return None
    # PYME prefers a rule server whose name contains this computer's name.
    rule_name = next((n for n in sorted(rule_servers) if here in n), sorted(rule_servers)[0])
    data_urls = [u for n, u in sorted(found[DATASERVER_SERVICE].items()) if here in n]
    data_urls = data_urls or sorted(found[DATASERVER_SERVICE].values())
    logger.info("discovered rule server %s and data servers %s", rule_name, data_urls)
    return Cluster(rule_servers[rule_name], data_urls, here)


class _Listener:
    """zeroconf service listener filling ``{service type: {instance name: URL}}``."""

    def __init__(self, found: dict[str, dict[str, str]]):
        self._found = found

    def add_service(self, zc, kind: str, name: str) -> None:
        info = zc.get_service_info(kind, name, timeout=1000)
        if info is None or not info.addresses:
            return
        address = socket.inet_ntoa(info.addresses[0])
        self._found[kind][name] = f"http://{address}:{info.port}"

    def update_service(self, zc, kind: str, name: str) -> None:
        self.add_service(zc, kind, name)

    def remove_service(self, zc, kind: str, name: str) -> None:
        self._found[kind].pop(name, None)
