"""The embedded data server: PYME's ``HTTPDataServer`` API over a root folder (protocol §4.3).

Plain PUTs are write-once and atomic (the body goes to a hidden temporary file in the target
directory, which is then hard-linked into place, so a dropped connection or a killed server never
leaves a half file and a concurrent PUT of the same name cannot be clobbered). Fit results are
appended to ``.h5r`` files through :mod:`cluster.h5r`, which serialises all HDF5 access.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import logging
import mimetypes
import os
import pathlib
import socket
import tempfile
import threading
import time
from urllib.parse import parse_qs

from cluster import h5r, h5r_shadow
from cluster.dataserver import paths
from cluster.dataserver.listing import list_directory
from cluster.dataserver.records import decode_batch, to_csv, to_json, to_npy, to_pickle
from cluster.http_base import Access, HTTPError, Limits, RequestHandler, ServerThread, query_int
from rules.dataserver_client import TABLE_ROWS_HEADER
from rules.safeload import load_json

logger = logging.getLogger(__name__)

AGGREGATE_TXT = "/__aggregate_txt/"
AGGREGATE_H5R = "/__aggregate_h5r/"
#: Headers naming the rule and the ``task:rows`` of an appended batch (Spoolside's workers), so
#: that a re-filed task's rows are skipped (see :class:`cluster.h5r.TaskRows`).
RULE_HEADER = "X-Spoolside-Rule"
TASK_ROWS_HEADER = "X-Spoolside-Task-Rows"
METADATA_PARTS = ("MetaData", "Metadata")

#: Files up to this size go out in one send with their headers; larger ones are streamed.
SINGLE_SEND_BYTES = 1 << 20


class DataRequestHandler(RequestHandler):
    """One connection of the data server (keep-alive, pipelined requests answered in order)."""

    server_version = "SpoolsideDataServer"

    # -- plumbing -------------------------------------------------------------------------
    @property
    def app(self) -> "DataServer":
        return self.server.owner

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch(self._put)

    def _dispatch(self, handler) -> None:
        try:
            handler()
        except HTTPError as exc:
            self.send_error_json(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - last resort: answer instead of dropping
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC,
                                                          getattr(errno, "EDQUOT", -1)):
                logger.error("%s %s: disk full (%s)", self.command, self.path, exc)
                self.send_error_json(507, f"disk full on the data server: {exc.strerror or exc}")
                return
            logger.exception("%s %s failed", self.command, self.path)
            self.send_error_json(500, f"internal error: {type(exc).__name__}: {exc}")

    def body_limit(self) -> int:
        """PUTs of files are streamed to disk; appends are held in memory; GETs carry no body."""
        if self.command != "PUT":
            return 0
        if self.path.startswith("/__"):
            return self.limits.max_memory_body
        return self.limits.max_body

    def _send_empty(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send_payload(status, b"", "text/plain", headers)

    # -- GET ------------------------------------------------------------------------------
    def _get(self) -> None:
        raw, _, query = self.path.partition("?")
        if raw == "/__status":
            return self.send_json(self.app.status())
        if raw == "/__glob":
            return self._glob(query)
        target = paths.resolve(self.app.root_path, raw)
        if os.path.isdir(target.path):
            if not target.trailing_slash and target.name:
                return self._send_empty(301, {"Location": f"/{target.name}/"})
            return self.send_json(list_directory(self.app.root_path, target.path))
        if os.path.isfile(target.path):
            if target.trailing_slash:
                raise HTTPError(404, f"{target.name!r} is a file, not a directory")
            return self._send_file(target.path)
        if ".h5r/" in target.name:
            return self._get_h5r(target.name, query)
        raise HTTPError(404, f"{target.name!r} not found")

    def _send_file(self, path: str) -> None:
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise HTTPError(403, f"cannot read file: {exc.strerror}") from exc
        # a results file being streamed is never written in place (see cluster.h5r_shadow)
        with handle, h5r_shadow.reading(path):
            size = os.fstat(handle.fileno()).st_size
            lines = ["HTTP/1.1 200 OK", f"Content-Type: {content_type}",
                     f"Content-Length: {size}"]
            if self.close_connection:
                lines.append("Connection: close")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            try:
                if self.command == "HEAD":
                    self.wfile.write(head)
                elif size <= SINGLE_SEND_BYTES:
                    self.wfile.write(head + handle.read(size))
                else:
                    self.wfile.write(head)
                    self.connection.sendfile(handle, 0, size)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
        self.log_request(200, size)

    def _glob(self, query: str) -> None:
        values = parse_qs(query, keep_blank_values=True).get("pattern")
        if not values or not values[0]:
            raise HTTPError(400, "missing query parameter 'pattern'")
        pattern = values[0]
        paths.check_name(pattern, paths.GLOB_RE)
        root = self.app.root_path
        found = []
        for name in glob.glob(pattern, root_dir=root):
            if os.path.basename(name.rstrip("/")).startswith(paths.TMP_PREFIX):
                continue
            if paths.inside(root, os.path.join(root, name)):
                found.append(name)
        self.send_json(sorted(found))

    def _get_h5r(self, name: str, query: str) -> None:
        file_name, _, part = name.rpartition(".h5r/")
        file_name += ".h5r"
        target = paths.resolve_name(self.app.root_path, file_name)
        if not os.path.isfile(target.path) or "/" in part or not part:
            raise HTTPError(404, f"{name!r} not found")
        if part in METADATA_PARTS or part in (p + ".json" for p in METADATA_PARTS):
            return self.send_json(_h5r_call(h5r.read_metadata, target.path))
        table, ext = os.path.splitext(part)
        if ext not in ("", ".npy", ".json", ".csv"):
            raise HTTPError(400, f"tables are served as .npy, .json, .csv or, with no extension, "
                                 f"as a pickled numpy array (PYME's form), not {ext!r}")
        params = {key: values[0] for key, values in parse_qs(query).items()}
        start = query_int(params, "from", 0, minimum=0)
        stop = query_int(params, "to", None, minimum=0)
        try:
            rows, total = _h5r_call(h5r.read_table_page, target.path, table, start, stop)
        except KeyError as exc:
            raise HTTPError(404, f"no table {table!r} in {file_name!r}") from exc
        # ours: the table's length, so a reader knows it without probing (PYME sends none)
        length = {TABLE_ROWS_HEADER: str(total)}
        if ext == "":  # PYME's clients read a table as ndarray.dumps() (a protocol-2 pickle)
            self.send_payload(200, to_pickle(rows), "application/octet-stream", length)
        elif ext == ".npy":
            self.send_payload(200, to_npy(rows), "application/octet-stream", length)
        elif ext == ".json":
            self.send_payload(200, to_json(rows), "application/json", length)
        else:
            self.send_payload(200, to_csv(rows), "text/csv", length)

    # -- PUT ------------------------------------------------------------------------------
    def _put(self) -> None:
        raw, _, query = self.path.partition("?")
        if query:
            raise HTTPError(400, "PUT takes no query parameters (MirrorSource is not supported)")
        decoded = paths.decode_once(raw)
        if decoded.startswith(AGGREGATE_TXT):
            return self._aggregate_txt(decoded[len(AGGREGATE_TXT):])
        if decoded.startswith(AGGREGATE_H5R):
            return self._aggregate_h5r(decoded[len(AGGREGATE_H5R):])
        if decoded.startswith("/__aggregate_") or decoded.startswith("/__pyramid_"):
            raise HTTPError(501, f"{decoded.split('/')[1]} is not supported by this data server")
        target = paths.resolve(self.app.root_path, raw)
        if not target.name:
            raise HTTPError(405, "the data root exists")
        if target.trailing_slash:
            return self._put_directory(target)
        self._put_file(target)

    def _put_directory(self, target: paths.Target) -> None:
        try:
            os.makedirs(target.path)
        except FileExistsError as exc:
            raise HTTPError(405, f"{target.name!r} already exists") from exc
        except (NotADirectoryError, PermissionError) as exc:
            raise HTTPError(409, f"cannot create directory {target.name!r}: {exc.strerror}") from exc
        self._send_empty()

    def _make_parent(self, target: paths.Target) -> str:
        parent = os.path.dirname(target.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError, PermissionError) as exc:
            raise HTTPError(409, f"cannot create the parent of {target.name!r}: "
                                 f"{exc.strerror}") from exc
        return parent

    def _put_file(self, target: paths.Target) -> None:
        if os.path.lexists(target.path):
            raise HTTPError(405, f"{target.name!r} already exists (files are write-once)")
        parent = self._make_parent(target)
        fd, tmp = tempfile.mkstemp(prefix=paths.TMP_PREFIX, dir=parent)
        try:
            with os.fdopen(fd, "wb") as out:
                self._receive_into(out)
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, target.path)  # atomic and never clobbers an existing file
            except FileExistsError as exc:
                raise HTTPError(405, f"{target.name!r} already exists (files are write-once)") \
                    from exc
            except OSError:  # file systems without hard links
                if os.path.lexists(target.path):
                    raise HTTPError(405, f"{target.name!r} already exists") from None
                os.replace(tmp, target.path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        self._send_empty()

    def _receive_into(self, out) -> None:
        """Stream the request body (gunzipped if it says so) into ``out``, within the limit
        (for gzip bodies the in-memory one: a small body never unpacks into a huge file)."""
        limit = self.limits.max_body
        if self.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity"):
            limit = min(limit, self.limits.max_memory_body)
        for chunk in self.iter_body(limit):
            out.write(chunk)

    def _aggregate_txt(self, name: str) -> None:
        target = paths.resolve_name(self.app.root_path, name)
        body = self.read_body()
        if os.path.isdir(target.path) or target.trailing_slash:
            raise HTTPError(409, f"{target.name!r} is a directory")
        self._make_parent(target)
        with self.app.file_lock(target.path):
            _check_appendable(target)
            try:
                fd = os.open(target.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except PermissionError as exc:
                raise HTTPError(409, f"{target.name!r} is not writable") from exc
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        self._send_empty()

    def _aggregate_h5r(self, name: str) -> None:
        if name.endswith(".h5r"):
            raise HTTPError(415, "legacy pickled fit-result uploads are refused; PUT .npy "
                                 "records to <file>.h5r/<Table>")
        file_name, sep, table = name.rpartition(".h5r/")
        if not sep or not table or "/" in table:
            raise HTTPError(400, "expected /__aggregate_h5r/<path>.h5r/<Table>")
        target = paths.resolve_name(self.app.root_path, file_name + ".h5r")
        body = self.read_body()
        if os.path.isdir(target.path):
            raise HTTPError(409, f"{target.name!r} is a directory")
        self._make_parent(target)
        if table in METADATA_PARTS:
            try:
                metadata = load_json(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise HTTPError(400, f"metadata body is not JSON: {exc}") from exc
            if not isinstance(metadata, dict):
                raise HTTPError(400, "metadata body must be a JSON object of dotted keys")
            with self.app.file_lock(target.path):
                _check_appendable(target)
                _h5r_call(h5r.write_metadata, target.path, metadata)
        else:
            if not h5r.TABLE_NAME_RE.match(table):
                raise HTTPError(400, f"invalid table name {table!r}")
            rows = self._task_rows()
            with self.app.file_lock(target.path):
                _check_appendable(target)
                records = decode_batch(body, lambda: _h5r_call(h5r.table_dtype,
                                                               target.path, table))
                _h5r_call(h5r.append_table, target.path, table, records, rows)
        self._send_empty()


    def _task_rows(self) -> h5r.TaskRows | None:
        rule_id, counts = self.headers.get(RULE_HEADER), self.headers.get(TASK_ROWS_HEADER)
        if rule_id is None and counts is None:
            return None
        if rule_id is None or counts is None:
            raise HTTPError(400, f"send both {RULE_HEADER} and {TASK_ROWS_HEADER}, or neither")
        try:
            return h5r.TaskRows.parse(rule_id.strip(), counts)
        except h5r.H5RError as exc:
            raise HTTPError(400, str(exc)) from exc


def _check_appendable(target: paths.Target) -> None:
    """Write-once files (made read-only by PUT) are never appended to, even when running as root."""
    try:
        mode = os.stat(target.path).st_mode
    except FileNotFoundError:
        return
    if not mode & 0o222:
        raise HTTPError(409, f"{target.name!r} is a read-only (write-once) file")


def _h5r_call(function, *args):
    try:
        return function(*args)
    except h5r.H5RError as exc:
        raise HTTPError(400, str(exc)) from exc
    except PermissionError as exc:
        raise HTTPError(409, f"results file is not writable: {exc.strerror}") from exc


class DataServer:
    """A PYME-compatible data server over ``root`` (binds 127.0.0.1 and a free port by default)."""

    def __init__(self, root: str | os.PathLike, bind: str = "127.0.0.1", port: int = 0,
                 serverfilter: str | None = None, limits: Limits | None = None,
                 access: Access | None = None):
        self.root_path = os.path.realpath(os.fspath(root))
        if not os.path.isdir(self.root_path):
            raise NotADirectoryError(f"data root {os.fspath(root)!r} is not a directory")
        self.root = pathlib.Path(self.root_path)
        self.serverfilter = serverfilter if serverfilter is not None else socket.gethostname()
        self.bind = bind
        self._http = ServerThread(DataRequestHandler, bind=bind, port=port, name="dataserver",
                                  limits=limits, access=access)
        self._http.server.owner = self
        self._started = time.time()
        self._running = False
        self._locks: dict[str, list] = {}  # path → [lock, holders and waiters]
        self._locks_guard = threading.Lock()

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> "DataServer":
        self._started = time.time()
        self._http.start()
        self._running = True
        logger.info("data server on %s serving %s", self.url, self.root_path)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (safe to call twice or before start)."""
        if self._running:
            self._running = False
            self._http.stop()
        else:
            self._http.server.server_close()
        h5r_shadow.drop_all(under=self.root_path)

    def __enter__(self) -> "DataServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextlib.contextmanager
    def file_lock(self, path: str):
        """Hold the lock serialising appends to one file (freed once no one holds or awaits it)."""
        with self._locks_guard:
            entry = self._locks.get(path)
            if entry is None:
                entry = self._locks[path] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._locks_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[path]

    def status(self) -> dict:
        """``/__status``: what PYME's clients use — how to reach this server and which cluster
        it serves — in PYME's shape; no disk, host, memory, CPU or network figures (they tell a
        stranger on the lab network much, and no client needs them)."""
        return {
            "Uptime": time.time() - self._started,
            "CPUUsage": [],
            "MemUsage": {},
            "Network": {},
            "BindAddress": self.bind,
            "Port": self.port,
            "Protocol": "HTTP/1.1",
            "TestMode": False,
            "ServerFilter": self.serverfilter,
        }
