"""HTTP endpoints of the rule server (PYME's paths, verbs and reply shapes) and ``RuleServer``."""
from __future__ import annotations

import logging
import math
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from cluster.http_base import (
    GZIP_MIN_BYTES,
    Access,
    HTTPError,
    Limits,
    RequestHandler,
    ServerThread,
    query_int,
)
from rules.safeload import load_json

from .model import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_TASKS, DEFAULT_RULE_TIMEOUT, RuleServerError, RuleTable
from .status import StatusGate

logger = logging.getLogger(__name__)

OK = b'{"ok": "True"}'
#: /queue_info_longpoll waits at most this long for a change.
LONGPOLL_SECONDS = 0.5
#: Rules are parsed in memory, holding the interpreter while they are: 8 MiB (~100 ms) fits a rule
#: naming ~80,000 input files; a 1,000,000-task localisation rule is a few kilobytes.
LIMITS = Limits(max_body=8 << 20, max_memory_body=8 << 20)
#: Bids and hand-ins: a PYME node bids on at most a few thousand tasks at a time.
MAX_WORKER_BODY = 2 << 20
#: The only endpoints that take a request body (PYME's node server bids with a GET body).
BODY_ROUTES = frozenset({"/add_integer_id_rule", "/bid_on_tasks", "/handin"})
#: State changes PYME's clients always POST: a GET (a link, an image on a web page) is refused.
POST_ONLY = frozenset({"/add_integer_id_rule", "/inactivate_rule", "/handin",
                       "/spoolside/requeue_failed", "/spoolside/heartbeat"})
#: State changes PYME's clients send as GET; like every POST, checked against cross-site use.
STATE_CHANGING = POST_ONLY | {"/release_rule_tasks", "/mark_release_complete", "/bid_on_tasks"}
#: /task_advertisements?wait=S waits at most this long for tasks (Spoolside's idle workers).
MAX_ADVERT_WAIT_SECONDS = 30.0
#: /spoolside/status?since=V&wait=S waits at most this long for a change (the window's watcher).
MAX_STATUS_WAIT_SECONDS = 30.0


def _seconds(params: dict[str, str], name: str, maximum: float) -> float:
    """A number of seconds from the query (0 when absent), at most ``maximum``."""
    if name not in params:
        return 0.0
    try:
        value = float(params[name])
    except ValueError:
        raise HTTPError(400, f"{name} must be a number, got {params[name]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise HTTPError(400, f"{name} must be a number of seconds, 0 or more")
    return min(value, maximum)


def _required(params: dict[str, str], name: str) -> str:
    try:
        return params[name]
    except KeyError:
        raise HTTPError(400, f"missing query parameter {name}") from None


def _json_body(body: bytes) -> Any:
    if not body:
        raise HTTPError(400, "this endpoint needs a JSON body")
    try:
        return load_json(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, f"malformed JSON body: {exc}") from exc


class RuleRequestHandler(RequestHandler):
    """Dispatches PYME's rule-server paths; state changes PYME's clients POST need a POST."""

    # path → (method name, allowed query parameters)
    routes: dict[str, tuple[str, frozenset[str]]] = {
        "/add_integer_id_rule": ("add_rule", frozenset(
            {"max_tasks", "release_start", "release_end", "ruleID", "timeout"})),
        "/release_rule_tasks": ("release", frozenset({"ruleID", "release_start", "release_end"})),
        "/mark_release_complete": ("mark_release_complete", frozenset({"ruleID", "n_tasks"})),
        "/inactivate_rule": ("inactivate", frozenset({"ruleID"})),
        "/task_advertisements": ("adverts", frozenset({"wait"})),
        "/bid_on_tasks": ("bid", frozenset()),
        "/handin": ("handin", frozenset()),
        "/distributor/queues": ("queues", frozenset()),
        "/queue_info_longpoll": ("queues_longpoll", frozenset()),
        "/": ("status_page", frozenset()),
        "/spoolside/followons": ("followons", frozenset({"ruleID"})),
        "/spoolside/requeue_failed": ("requeue_failed", frozenset({"ruleID"})),
        "/spoolside/rules": ("rules_info", frozenset()),
        "/spoolside/heartbeat": ("heartbeat", frozenset({"worker"})),
        "/spoolside/status": ("status_changes", frozenset({"since", "wait"})),
    }

    @property
    def table(self) -> RuleTable:
        return self.server.owner.table

    def body_limit(self) -> int:
        path = self.path.partition("?")[0]
        if path not in BODY_ROUTES:
            return 0
        if path == "/add_integer_id_rule":
            return self.limits.max_memory_body
        return min(MAX_WORKER_BODY, self.limits.max_memory_body)

    def changes_state(self) -> bool:
        return self.path.partition("?")[0] in STATE_CHANGING

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        try:
            if self.command == "GET" and self.path.partition("?")[0] in POST_ONLY:
                raise HTTPError(405, f"{self.path.partition('?')[0]} changes the rule server's "
                                     "state: use POST")
            body = self.read_body()
            url = urlsplit(self.path)
            route = self.routes.get(url.path)
            if route is None:
                raise HTTPError(404, f"No handler for {url.path}")
            name, allowed = route
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            params.pop("authenticated_as", None)
            unexpected = sorted(set(params) - allowed)
            if unexpected:
                raise HTTPError(400, f"unexpected query parameter(s) for {url.path}: "
                                     f"{', '.join(unexpected)}")
            handler: Callable[[dict[str, str], bytes], None] = getattr(self, "h_" + name)
            handler(params, body)
        except HTTPError as exc:
            self.send_error_json(exc.status, exc.message)
        except RuleServerError as exc:
            self.send_error_json(exc.status, str(exc))
        except Exception as exc:  # never let one request take the server down
            logger.exception("rule server request %s failed", self.path)
            self.send_error_json(500, f"internal error: {type(exc).__name__}: {exc}")

    do_POST = do_GET

    # -- PYME endpoints ---------------------------------------------------------------------
    def h_add_rule(self, params: dict[str, str], body: bytes) -> None:
        spec = _json_body(body)
        max_tasks = query_int(params, "max_tasks", DEFAULT_MAX_TASKS)
        timeout = DEFAULT_RULE_TIMEOUT
        if "timeout" in params:
            try:
                timeout = float(params["timeout"])
            except ValueError:
                raise HTTPError(400, f"timeout must be a number, got {params['timeout']!r}") from None
            if not math.isfinite(timeout) or timeout <= 0:
                raise HTTPError(400, "timeout must be a positive number of seconds")
        start, end = params.get("release_start"), params.get("release_end")
        if (start is None) != (end is None):
            raise HTTPError(400, "give both release_start and release_end, or neither")
        release = None
        if start is not None:
            release = (query_int(params, "release_start", 0), query_int(params, "release_end", 0))
        rule_id = self.table.add_rule(spec, max_tasks=max_tasks, rule_timeout=timeout,
                                      release=release, rule_id=params.get("ruleID"))
        self.send_json({"ok": "True", "ruleID": rule_id})

    def h_release(self, params: dict[str, str], body: bytes) -> None:
        rule_id = _required(params, "ruleID")
        start = query_int(params, "release_start")
        end = query_int(params, "release_end")
        if start is None or end is None:
            raise HTTPError(400, "missing query parameter release_start or release_end")
        self.table.release(rule_id, start, end)
        self.send_payload(200, OK)

    def h_mark_release_complete(self, params: dict[str, str], body: bytes) -> None:
        self.table.mark_release_complete(_required(params, "ruleID"),
                                         query_int(params, "n_tasks"))
        self.send_payload(200, OK)

    def h_inactivate(self, params: dict[str, str], body: bytes) -> None:
        self.table.inactivate(_required(params, "ruleID"))
        self.send_payload(200, OK)

    def h_adverts(self, params: dict[str, str], body: bytes) -> None:
        wait = _seconds(params, "wait", MAX_ADVERT_WAIT_SECONDS)
        self.send_payload(200, self.table.adverts_json(wait))

    def h_bid(self, params: dict[str, str], body: bytes) -> None:
        self.send_json(self.table.bid(_json_body(body)))

    def h_handin(self, params: dict[str, str], body: bytes) -> None:
        unknown = self.table.handin(_json_body(body))
        if unknown:
            self.send_error_json(404, f"unknown rule ID(s) {sorted(set(unknown))}; "
                                      "the other hand-ins were applied")
        else:
            self.send_payload(200, OK)

    @property
    def status(self) -> StatusGate:
        return self.server.owner.status

    def _send_status(self, name: str, build: Callable[[], Any]) -> None:
        """A status reply: paced (:meth:`StatusGate.wait_turn`), from the snapshot, gzipped
        once for every client that asks."""
        self.status.wait_turn(self, name)
        snapshot = self.status.snapshot(name, build)
        if len(snapshot.body) >= GZIP_MIN_BYTES and "gzip" in self.headers.get("Accept-Encoding", ""):
            self.send_payload(200, snapshot.gzipped(), headers={"Content-Encoding": "gzip"},
                              compress=False)
        else:
            self.send_payload(200, snapshot.body, compress=False)

    def h_queues(self, params: dict[str, str], body: bytes) -> None:
        self._send_status("queues", lambda: {"ok": True, "result": self.table.queue_info()})

    def h_queues_longpoll(self, params: dict[str, str], body: bytes) -> None:
        self.table.wait_for_change(LONGPOLL_SECONDS)
        self.h_queues(params, body)

    def h_status_page(self, params: dict[str, str], body: bytes) -> None:
        self.send_payload(200, STATUS_PAGE, content_type="text/html; charset=utf-8")

    # -- our own -----------------------------------------------------------------------------
    def h_followons(self, params: dict[str, str], body: bytes) -> None:
        ids = self.table.followons(_required(params, "ruleID"))
        self.send_json({"ok": "True", "ruleIDs": ids})

    def h_requeue_failed(self, params: dict[str, str], body: bytes) -> None:
        n = self.table.requeue_failed(_required(params, "ruleID"))
        self.send_json({"ok": "True", "requeued": n})

    def h_rules_info(self, params: dict[str, str], body: bytes) -> None:
        self._send_status("rules", self.table.rules_info)

    def h_status_changes(self, params: dict[str, str], body: bytes) -> None:
        """Every rule's counters and parent links once the table's version differs from
        ``since`` (at once without it), or after ``wait`` seconds: a watcher long-polls this, so
        an idle window costs one request per ``wait`` instead of two a second."""
        since = query_int(params, "since", None, minimum=0)
        if since is not None:
            self.table.wait_for_change(_seconds(params, "wait", MAX_STATUS_WAIT_SECONDS),
                                       since=since)

        def build() -> dict:
            version = self.table.version  # read first: the counters are at least this new
            return {"ok": True, "version": version, "result": self.table.queue_info(),
                    "rules": self.table.rules_info()}
        self._send_status("status", build)

    def h_heartbeat(self, params: dict[str, str], body: bytes) -> None:
        n = self.table.heartbeat(_required(params, "worker"))
        self.send_json({"ok": "True", "lease": self.table.lease, "tasks": n})


class RuleServer:
    """The embedded rule server: ``RuleServer(...).start()``, ``.url``, ``.stop()``."""

    #: the request handler (a subclass may serve fewer ``routes``, e.g. only PYME's own paths)
    handler_class: type[RuleRequestHandler] = RuleRequestHandler

    def __init__(self, bind: str = "127.0.0.1", port: int = 0, task_timeout: float = 600.0,
                 retries: int = 1, limits: Limits | None = None, access: Access | None = None,
                 lease: float = DEFAULT_LEASE_SECONDS):
        self.table = RuleTable(task_timeout=task_timeout, retries=retries, lease=lease)
        self.status = StatusGate(lambda: self.table.version)
        self._http = ServerThread(self.handler_class, bind=bind, port=port, name="ruleserver",
                                  limits=limits or LIMITS, access=access)
        self._http.server.owner = self

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def port(self) -> int:
        return self._http.port

    def start(self) -> "RuleServer":
        self.table.start()
        self._http.start()
        logger.info("rule server listening on %s", self.url)
        return self

    def stop(self) -> None:
        self._http.stop()
        self.table.stop()

    def __enter__(self) -> "RuleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


STATUS_PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Spoolside rule server</title>
<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td.id{text-align:left;font-family:monospace}</style>
</head><body><h1>Rule server</h1>
<table><thead><tr><th>rule</th><th>posted</th><th>running</th><th>completed</th><th>failed</th>
<th>timed out</th><th>state</th><th></th></tr></thead><tbody id="rules"></tbody></table>
<script>
function abort(id){fetch('/inactivate_rule?ruleID='+encodeURIComponent(id),{method:'POST'});}
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return '&#'+c.charCodeAt(0)+';';});}
function show(q){var rows=[];for(var id in q){var r=q[id];
 var state=r.finished?'finished':(r.active?'active':'aborted');
 rows.push('<tr><td class="id">'+esc(id)+'</td><td>'+r.tasksPosted+'</td><td>'+r.tasksRunning+
 '</td><td>'+r.tasksCompleted+'</td><td>'+r.tasksFailed+'</td><td>'+r.tasksTimedOut+'</td><td>'+state+
 '</td><td>'+(r.active&&!r.finished?
   '<button onclick="abort(\\''+esc(id)+'\\')">Abort</button>':'')+'</td></tr>');}
 document.getElementById('rules').innerHTML=rows.join('');}
function poll(){fetch('/queue_info_longpoll').then(function(r){return r.json();})
 .then(function(j){show(j.result);setTimeout(poll,500);}).catch(function(){setTimeout(poll,2000);});}
poll();
</script></body></html>
"""
