"""HTTP client for one or several PYME data servers holding one logical cluster tree (§4)."""
from __future__ import annotations

import functools
import gzip
import io
import itertools
import logging
import posixpath
import socket
import threading
import time
from typing import Iterable, NamedTuple
from urllib.parse import quote, urlsplit

import numpy as np
import requests

from .errors import (
    ClusterError,
    ClusterUnreachable,
    ProtocolError,
    RequestRefused,
    check_base_url,
    error_from_request_exception,
    no_answer,
    refused_from_response,
)
from .pipelined_put import PipelinedPuts
from .ruleserver_client import DEFAULT_TIMEOUT, make_session
from .uris import check_name, cluster_path, make_cluster_uri, parse_cluster_uri

logger = logging.getLogger(__name__)

FLAG_DIR, FLAG_SERIES, FLAG_COMPLETE = 1, 2, 4
#: A Spoolside data server's table reads carry the table's row count in this header (PYME's
#: do not: :func:`rules.result_tables.table_length` finds it by reading).
TABLE_ROWS_HEADER = "X-Spoolside-Table-Rows"


class FileInfo(NamedTuple):
    """One listing entry: PYME's ``[flags, size]`` (size = entries for directories, -1 while aggregating)."""

    flags: int
    size: int

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & FLAG_DIR)

    @property
    def is_series(self) -> bool:
        return bool(self.flags & FLAG_SERIES)

    @property
    def is_complete(self) -> bool:
        return bool(self.flags & FLAG_COMPLETE)


def _split_urls(urls: str | Iterable[str]) -> list[str]:
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    result = [check_base_url(u.strip()) for u in items if u and u.strip()]
    if not result:
        raise ValueError("give at least one data server URL")
    return result


class DataClient:
    """Read and write a cluster tree spread over ``urls``; paths are bare or ``PYME-CLUSTER://`` URIs.

    Reads retry ``retries`` times on connection errors (not on a server that accepted and did not
    answer within the read ``timeout``); listings are cached for ``listing_ttl`` seconds, and every
    write through this client drops the cache.
    """

    def __init__(self, urls: str | list[str], serverfilter: str = "", *,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 retries: int = 3, listing_ttl: float = 0.5):
        self.urls = _split_urls(urls)
        self.serverfilter = serverfilter
        self.timeout = timeout
        self.retries = max(1, int(retries))
        self.listing_ttl = listing_ttl
        self._session = make_session()
        self._lock = threading.Lock()
        self._listings: dict[tuple[str, str], tuple[float, dict[str, FileInfo]]] = {}
        self._locations: dict[str, list[str]] = {}
        self._next_put = itertools.cycle(range(len(self.urls)))

    # -- listings -------------------------------------------------------------------------
    def listdirectory(self, path: str = "", *, fresh: bool = False) -> dict[str, FileInfo]:
        """``{name: FileInfo}`` merged over all servers (directory names end with ``/``).

        Union of names, flags OR-ed, directory sizes summed; a directory no server has → ``{}``.
        """
        directory = cluster_path(path).strip("/")
        merged: dict[str, FileInfo] = {}
        answered, failure = 0, None
        for url in self.urls:
            try:
                listing = self._server_listing(url, directory, fresh)
            except ClusterUnreachable as exc:
                logger.debug("data server %s did not answer a listing: %s", url, exc)
                failure = exc
                continue
            answered += 1
            for name, info in listing.items():
                old = merged.get(name)
                if old is None:
                    merged[name] = info
                elif name.endswith("/"):
                    merged[name] = FileInfo(old.flags | info.flags, old.size + info.size)
                else:
                    merged[name] = FileInfo(old.flags | info.flags, max(old.size, info.size))
        if not answered and failure is not None:
            raise failure
        if failure is not None:
            logger.warning("listing %r without %s", directory, failure)
        return merged

    def listdir(self, path: str = "", *, fresh: bool = False) -> list[str]:
        """Sorted names in a directory (directories keep their trailing ``/``, as PYME's)."""
        return sorted(self.listdirectory(path, fresh=fresh))

    def isdir(self, path: str) -> bool:
        directory = cluster_path(path).strip("/")
        if not directory:
            return True
        parent, name = posixpath.split(directory)
        info = self.listdirectory(parent).get(name + "/")
        return info is not None

    def exists(self, path: str) -> bool:
        """A file held by some server, or a directory."""
        return bool(self.locate_file(path)) or self.isdir(path)

    def locate_file(self, path: str) -> list[str]:
        """Base URLs of the servers holding file ``path`` (empty if none); raises
        :class:`ClusterUnreachable` when no server answered."""
        bare = cluster_path(path).strip("/")
        with self._lock:
            known = self._locations.get(bare)
        if known:
            return list(known)
        parent, name = posixpath.split(bare)
        if not name:
            return []
        found, failure, answered = [], None, 0
        for url in self.urls:
            try:
                listing = self._server_listing(url, parent, False)
            except ClusterUnreachable as exc:
                failure = exc
                continue
            answered += 1
            if name in listing:
                found.append(url)
        if failure is not None:
            if not answered:
                raise failure  # no server answered: "not there" would be a guess
            logger.warning("looking for %r without %s", bare, failure)
        if found:
            with self._lock:  # write-once files do not move: remember where they are
                self._locations[bare] = found
        return found

    def cglob(self, pattern: str) -> list[str]:
        """Full ``PYME-CLUSTER://<serverfilter>/...`` URIs matching a glob, sorted (§8.18)."""
        parsed = parse_cluster_uri(pattern)
        serverfilter = parsed.serverfilter or self.serverfilter
        found: set[str] = set()
        for url in self.urls:
            body = self._get_json(url, "/__glob", params={"pattern": parsed.path})
            if not isinstance(body, list) or not all(isinstance(p, str) for p in body):
                raise ProtocolError(f"{url}/__glob reply is not a list of paths: {body!r:.200}",
                                    url=url)
            found.update(p.lstrip("/") for p in body)
        return sorted(make_cluster_uri(p, serverfilter) for p in found)

    # -- files ----------------------------------------------------------------------------
    def get_file(self, path: str) -> bytes:
        """The bytes of a file; ``FileNotFoundError`` if no server has it."""
        bare = cluster_path(path).strip("/")
        response = self._get_from_any(bare, "/" + quote(bare))
        return response.content

    def put_file(self, path: str, data: bytes | str) -> str:
        """Write a new file (write-once: ``FileExistsError`` if it exists); return the server URL.

        Text is written as UTF-8.
        """
        bare = check_name(path)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(self.urls) > 1 and self.locate_file(bare):
            # each server only knows its own files: check the others before writing
            raise FileExistsError(f"{make_cluster_uri(bare, self.serverfilter)} already exists "
                                  "(cluster files are write-once)")
        url = self.urls[next(self._next_put)]
        response = self._request("PUT", url + "/" + quote(bare), data=data)
        if response.status_code == 405:
            raise FileExistsError(f"{make_cluster_uri(bare, self.serverfilter)} already exists "
                                  "(cluster files are write-once)")
        if response.status_code >= 400:
            raise refused_from_response(response, "PUT", bare)
        self._invalidate()
        with self._lock:
            self._locations[bare] = [url]
        return url

    def pipelined_puts(self, on_stored=None, window: int = 64) -> PipelinedPuts:
        """A :class:`~rules.pipelined_put.PipelinedPuts` to the next server this client writes
        to, for many new files (a spooler's frames); close it when done."""
        url = self.urls[next(self._next_put)]

        def stored(path: str) -> None:
            self._invalidate()
            with self._lock:
                self._locations[path] = [url]
            if on_stored is not None:
                on_stored(path)
        return PipelinedPuts(url, on_stored=stored, window=window,
                             timeout=self.timeout if isinstance(self.timeout, (int, float))
                             else max(self.timeout))

    def aggregate_url(self, path: str, kind: str = "h5r") -> str:
        """``http://host:port/__aggregate_<kind>/<path>`` on the server already holding ``path``."""
        bare = check_name(path)
        located = self.locate_file(bare)
        return f"{(located or self.urls)[0]}/__aggregate_{kind}/{quote(bare)}"

    def append_text(self, path: str, text: str) -> None:
        """Append text to a file through ``PUT /__aggregate_txt/<path>`` (created if needed)."""
        target = self.aggregate_url(path, "txt")
        response = self._request("PUT", target, data=text.encode("utf-8"))
        if response.status_code >= 400:
            raise refused_from_response(response, "PUT", target)
        self._invalidate()

    def put_url(self, url: str, data: bytes, *, headers: dict[str, str] | None = None,
                timeout: float | None = None) -> None:
        """PUT ``data`` to a full data-server URL (e.g. ``<aggregate_url>/MetaData``), sent once.

        Only this cluster's own data servers are written to: a URL elsewhere (e.g. from a task
        template) is refused with :class:`RequestRefused` before anything is sent.

        Raises the engine's errors: :class:`ClusterUnreachable`, :class:`RequestRefused` for an
        error status, :class:`ProtocolError`.
        """
        if not any(same_server(url, base) for base in self.urls):
            raise RequestRefused(f"refusing to PUT to {url}: not one of this cluster's data "
                                 f"servers ({', '.join(self.urls)})")
        response = self._request("PUT", url, data=data, headers=headers,
                                 timeout=self.timeout if timeout is None else timeout)
        if response.status_code >= 400:
            raise refused_from_response(response, "PUT", url)
        self._invalidate()

    def append_records(self, url: str, records: np.ndarray, *, compress: bool = True,
                       timeout: float | None = None,
                       task_rows: tuple[str, list[tuple[int, int]]] | None = None) -> None:
        """Append numpy records to a table of an ``.h5r`` through its aggregate URL
        (``<aggregate_url>/<Table>``, see :meth:`aggregate_url`): ``.npy``, gzip-compressed unless
        ``compress`` is false.

        ``task_rows`` = ``(rule ID, [(task ID, row count), ...])`` in row order tells a Spoolside
        data server which task each row belongs to: rows of tasks already filed are skipped, so
        sending a batch again never duplicates it."""
        buffer = io.BytesIO()
        np.save(buffer, records, allow_pickle=False)
        body, headers = buffer.getvalue(), {}
        if compress:
            body = gzip.compress(body, 3)
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"}
        if task_rows is not None:
            rule_id, counts = task_rows
            headers["X-Spoolside-Rule"] = rule_id
            headers["X-Spoolside-Task-Rows"] = ",".join(f"{int(t)}:{int(n)}" for t, n in counts)
        self.put_url(url, body, headers=headers or None, timeout=timeout)

    def read_table(self, path: str, table: str, start: int = 0,
                   stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of a table in an ``.h5r`` file (``GET <file>/<Table>.npy``)."""
        return self.read_table_page(path, table, start, stop)[0]

    def read_table_page(self, path: str, table: str, start: int = 0,
                        stop: int | None = None) -> tuple[np.ndarray, int | None]:
        """:meth:`read_table`, and the table's row count when the server tells it (Spoolside's
        ``X-Spoolside-Table-Rows``; None from PYME's)."""
        bare = cluster_path(path).strip("/")
        params = {"from": str(int(start))}
        if stop is not None:
            params["to"] = str(int(stop))
        response = self._get_from_any(
            bare, f"/{quote(bare)}/{quote(table)}.npy",
            what=f"table {table!r} of {make_cluster_uri(bare, self.serverfilter)}", params=params)
        try:
            rows = np.load(io.BytesIO(response.content), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ProtocolError(f"{bare}/{table}.npy is not .npy data ({len(response.content)} "
                                "bytes)", url=response.url) from exc
        total = response.headers.get(TABLE_ROWS_HEADER, "")
        return rows, int(total) if total.isdigit() else None

    # -- plumbing -------------------------------------------------------------------------
    def _server_listing(self, url: str, directory: str, fresh: bool) -> dict[str, FileInfo]:
        key = (url, directory)
        now = time.monotonic()
        with self._lock:
            cached = self._listings.get(key)
        if cached is not None and not fresh and now - cached[0] < self.listing_ttl:
            return cached[1]
        endpoint = "/" + quote(directory + "/") if directory else "/"
        body = self._get_json(url, endpoint, missing_ok=True)
        listing = {} if body is None else self._parse_listing(url, directory, body)
        with self._lock:
            self._listings[key] = (now, listing)
        return listing

    @staticmethod
    def _parse_listing(url: str, directory: str, body) -> dict[str, FileInfo]:
        if not isinstance(body, dict):
            raise ProtocolError(f"listing of {directory!r} on {url} is not an object: "
                                f"{body!r:.200}", url=url)
        listing = {}
        for name, entry in body.items():
            if (not isinstance(entry, list) or len(entry) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)):
                raise ProtocolError(f"listing of {directory!r} on {url}: entry {name!r} is not "
                                    f"[flags, size]: {entry!r:.100}", url=url)
            flags = entry[0] | (FLAG_DIR if name.endswith("/") else 0)  # trust the slash (§4.3)
            listing[name] = FileInfo(flags, entry[1])
        return listing

    def _get_json(self, url: str, endpoint: str, *, missing_ok: bool = False, **kwargs):
        response = self._request("GET", url + endpoint, reads=True, **kwargs)
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise refused_from_response(response, "GET", endpoint)
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(f"GET {url}{endpoint}: reply is not JSON: "
                                f"{response.text[:200]!r}", url=url) from exc

    def _get_from_any(self, bare: str, endpoint: str, what: str = "",
                      **kwargs) -> requests.Response:
        """GET from the servers known to hold ``bare`` first, then the others; 404 everywhere →
        ``FileNotFoundError``."""
        with self._lock:
            known = self._locations.get(bare, [])
        order = known + [u for u in self.urls if u not in known]
        failure: ClusterError | None = None
        answered = 0
        for url in order:
            try:
                response = self._request("GET", url + endpoint, reads=True, **kwargs)
            except ClusterUnreachable as exc:
                failure = exc
                continue
            answered += 1
            if response.status_code == 404:
                continue
            if response.status_code >= 400:
                raise refused_from_response(response, "GET", endpoint)
            return response
        if failure is not None and not answered:
            raise failure
        raise FileNotFoundError(f"{what or make_cluster_uri(bare, self.serverfilter)} not found "
                                f"on {', '.join(order)}")

    def _request(self, method: str, url: str, *, reads: bool = False,
                 **kwargs) -> requests.Response:
        attempts = self.retries if reads else 1
        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(attempts):
            try:
                return self._session.request(method, url, **kwargs)
            except requests.RequestException as exc:
                error = error_from_request_exception(exc, method, url)
                if (not isinstance(error, ClusterUnreachable) or attempt == attempts - 1
                        or no_answer(exc)):
                    raise error from exc
                logger.debug("retrying %s %s after %s", method, url, exc)
                time.sleep(0.1 * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _invalidate(self) -> None:
        with self._lock:
            self._listings.clear()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "DataClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@functools.lru_cache(maxsize=64)
def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except (OSError, UnicodeError):
        return frozenset()


def _local_addresses() -> frozenset[str]:
    return _addresses(socket.gethostname()) | _addresses("localhost") | {"127.0.0.1", "::1"}


def same_server(url: str, base: str) -> bool:
    """Whether ``url`` points at the server ``base`` (same scheme and port; same host name, or
    names resolving to a common address, or both names this machine)."""
    a, b = urlsplit(url), urlsplit(base)
    if a.scheme != b.scheme or a.port != b.port or not a.hostname or not b.hostname:
        return False
    if a.hostname.lower() == b.hostname.lower():
        return True
    left, right = _addresses(a.hostname), _addresses(b.hostname)
    if left & right:
        return True
    local = _local_addresses()
    return bool(left) and bool(right) and left <= local | {x for x in left if x.startswith("127.")} \
        and right <= local | {x for x in right if x.startswith("127.")}
