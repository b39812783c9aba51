"""HTTP client for a PYME (or Spoolside) rule server, sending what PYME's client sends (§1, §3.1)."""
from __future__ import annotations

import logging
import os
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import (
    ProtocolError,
    RequestRefused,
    check_base_url,
    error_from_request_exception,
    refused_from_response,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_TASKS = 1_000_000
DEFAULT_RULE_TIMEOUT = 3600
#: (connect, read) seconds per request: with the two connect retries, a server that never accepts
#: or accepts and never answers fails within 10 s, naming its URL.
DEFAULT_TIMEOUT = (2.5, 6.0)


#: Environment variable holding the shared token of a cluster bound beyond loopback.
TOKEN_ENV = "SPOOLSIDE_TOKEN"
#: Header in which Spoolside's clients and workers send that token.
TOKEN_HEADER = "X-Spoolside-Token"


def make_session(connect_retries: int = 2, read_retries: int = 0) -> requests.Session:
    """A session that ignores proxy environment variables (as PYME's) and retries failed connects.

    It sends the cluster's shared token (``$SPOOLSIDE_TOKEN``) when there is one.

    Only connection attempts are retried by default: a request that reached the server is never
    sent twice (re-releasing a range re-runs finished tasks).
    """
    session = requests.Session()
    session.trust_env = False
    token = os.environ.get(TOKEN_ENV)
    if token:
        session.headers[TOKEN_HEADER] = token
    retry = Retry(total=None, connect=connect_retries, read=read_retries, status=0, other=0,
                  redirect=0, backoff_factor=0.05, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=8)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _number(value: float) -> str:
    """Integral values as PYME's ``%d``; fractions kept (the server parses ``float()``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _endpoint_missing(response: requests.Response) -> bool:
    """A 404 for the path itself (a PYME server without our endpoints), not for e.g. a rule ID."""
    try:
        body = response.json()
    except ValueError:
        return True  # PYME answers unknown paths with a plain-text page
    error = body.get("error") if isinstance(body, dict) else None
    return not isinstance(error, str) or error.startswith("No handler")


class RuleServerClient:
    """Talks to one rule server; every failure raises a :class:`~rules.errors.ClusterError`.

    Parameters
    ----------
    base_url
        ``http://host:port`` of the rule server.
    session
        a ``requests.Session`` to use (not closed by :meth:`close`); default: an own one.
    timeout
        seconds for connecting and for each read: one number or ``(connect, read)``.
    """

    def __init__(self, base_url: str, *, session: requests.Session | None = None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT):
        self.base_url = check_base_url(base_url)
        self._own_session = session is None
        self._session = session if session is not None else make_session()
        self.timeout = timeout

    # -- rules ----------------------------------------------------------------------------
    def add_rule(self, rule: dict, *, max_tasks: int = DEFAULT_MAX_TASKS,
                 rule_timeout: float = DEFAULT_RULE_TIMEOUT, release_start: int | None = None,
                 release_end: int | None = None, rule_id: str | None = None) -> str:
        """Create a rule (``POST /add_integer_id_rule``) and return its ID.

        ``rule`` is ``{"template": str, "inputsByTask"?: {...}, "on_completion"?: {...}}``.
        ``release_start``/``release_end`` release that range at creation (both or neither).
        """
        if not isinstance(rule, dict) or not isinstance(rule.get("template"), str):
            raise ValueError("a rule is a dict with a 'template' string")
        if (release_start is None) != (release_end is None):
            raise ValueError("give both release_start and release_end, or neither")
        params = {"timeout": _number(rule_timeout), "max_tasks": str(int(max_tasks))}
        if release_start is not None and release_end is not None:
            params["release_start"] = str(int(release_start))
            params["release_end"] = str(int(release_end))
        if rule_id is not None:
            if "~" in rule_id:
                raise ValueError(f"rule ID {rule_id!r} must not contain '~'")
            params["ruleID"] = rule_id
        reply = self._call("POST", "/add_integer_id_rule", params=params, json=rule)
        new_id = reply.get("ruleID") if isinstance(reply, dict) else None
        if not isinstance(new_id, str) or not new_id:
            raise ProtocolError(f"/add_integer_id_rule reply has no ruleID: {reply!r:.200}",
                                url=self.base_url)
        logger.info("created rule %s (max_tasks=%s)", new_id, params["max_tasks"])
        return new_id

    def release_tasks(self, rule_id: str, start: int, end: int) -> None:
        """Make tasks ``[start, end)`` available (``GET /release_rule_tasks``)."""
        self._call("GET", "/release_rule_tasks", params={
            "ruleID": rule_id, "release_start": str(int(start)), "release_end": str(int(end))})
        logger.debug("released tasks %d..%d of rule %s", start, end, rule_id)

    def mark_release_complete(self, rule_id: str, n_tasks: int | None = None) -> None:
        """Say no more tasks will be released (``GET /mark_release_complete``)."""
        params = {"ruleID": rule_id}
        if n_tasks is not None:
            params["n_tasks"] = str(int(n_tasks))
        self._call("GET", "/mark_release_complete", params=params)

    def inactivate_rule(self, rule_id: str) -> None:
        """Stop a rule advertising tasks (``POST /inactivate_rule``); cannot be undone."""
        self._call("POST", "/inactivate_rule", params={"ruleID": rule_id})
        logger.info("inactivated rule %s", rule_id)

    def requeue_failed(self, rule_id: str) -> int | None:
        """Run a rule's failed tasks again (Spoolside's ``/spoolside/requeue_failed``); returns how
        many were queued, or None on a rule server without it (PYME)."""
        reply = self._call("POST", "/spoolside/requeue_failed", params={"ruleID": rule_id},
                           absent_ok=True)
        if reply is None:
            return None
        n = reply.get("requeued") if isinstance(reply, dict) else None
        if not isinstance(n, int):
            raise ProtocolError(f"/spoolside/requeue_failed reply has no count: {reply!r:.200}",
                                url=self.base_url)
        logger.info("requeued %d failed task(s) of rule %s", n, rule_id)
        return n

    # -- status ---------------------------------------------------------------------------
    def queue_info(self) -> dict[str, dict]:
        """Every rule's counters: ``{ruleID: {"tasksPosted": ..., "finished": ..., ...}}``."""
        reply = self._call("GET", "/distributor/queues")
        result = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(result, dict) or not all(isinstance(v, dict) for v in result.values()):
            raise ProtocolError("/distributor/queues reply is not "
                                f"{{'ok': true, 'result': {{ruleID: {{...}}}}}}: {reply!r:.200}",
                                url=self.base_url)
        return result

    def followon_ids(self, rule_id: str) -> list[str] | None:
        """IDs of the follow-on rules created for ``rule_id`` so far; None on a PYME server."""
        reply = self._call("GET", "/spoolside/followons", params={"ruleID": rule_id},
                           absent_ok=True)
        if reply is None:
            return None
        ids = reply.get("ruleIDs") if isinstance(reply, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ProtocolError(f"/spoolside/followons reply has no ruleIDs list: {reply!r:.200}",
                                url=self.base_url)
        return ids

    def extra_rule_info(self) -> dict | None:
        """Spoolside's extra per-rule information (``GET /spoolside/rules``); None on PYME.

        Returns the reply's ``result`` object when it has one, else the reply object.
        """
        reply = self._call("GET", "/spoolside/rules", absent_ok=True)
        if reply is None:
            return None
        if not isinstance(reply, dict):
            raise ProtocolError(f"/spoolside/rules reply is not an object: {reply!r:.200}",
                                url=self.base_url)
        result = reply.get("result")
        return result if isinstance(result, dict) else reply

    def status_changes(self, since: int | None = None, wait: float = 0.0
                       ) -> tuple[int, dict[str, dict], dict[str, dict]] | None:
        """Spoolside's long poll ``GET /spoolside/status``: once the server's state differs from
        version ``since`` (at once without it) or after ``wait`` seconds, ``(version, queue info
        as :meth:`queue_info`, extra rule info as :meth:`extra_rule_info`)``; None on PYME."""
        params: dict[str, str] = {}
        if since is not None:
            params = {"since": str(int(since)), "wait": _number(wait)}
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout,) * 2
        reply = self._call("GET", "/spoolside/status", params=params, absent_ok=True,
                           timeout=(connect, read + wait))
        if reply is None:
            return None
        version = reply.get("version") if isinstance(reply, dict) else None
        result = reply.get("result") if isinstance(reply, dict) else None
        rules = reply.get("rules") if isinstance(reply, dict) else None
        if (not isinstance(version, int) or isinstance(version, bool) or not isinstance(result, dict)
                or not all(isinstance(v, dict) for v in result.values())
                or not isinstance(rules, dict)):
            raise ProtocolError(f"/spoolside/status reply is not {{'version', 'result', 'rules'}}: "
                                f"{reply!r:.200}", url=self.base_url)
        return version, result, rules

    # -- the worker's side (§2.2) ----------------------------------------------------------
    def task_adverts(self, wait: float = 0.0) -> list[dict]:
        """The adverts of rules with available tasks (``GET /task_advertisements``, §1.2); with
        ``wait``, a Spoolside server holds the request up to that long until there are some."""
        params = {"wait": _number(wait)} if wait > 0 else None
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout,) * 2
        reply = self._call("GET", "/task_advertisements", params=params,
                           timeout=(connect, read + wait))
        if not isinstance(reply, list) or not all(isinstance(a, dict) for a in reply):
            raise ProtocolError(f"/task_advertisements reply is not a list of adverts: "
                                f"{reply!r:.200}", url=self.base_url)
        return reply

    def bid(self, rule_id: str, task_ids: list[int], costs: list[float],
            worker: str | None = None) -> dict:
        """Bid for tasks of one rule (``POST /bid_on_tasks``); returns the award
        ``{"ruleID", "taskIDs": [won], "template"}``. A named ``worker`` holds its tasks on a
        lease it renews with :meth:`heartbeat` (Spoolside's rule server)."""
        bid: dict[str, Any] = {"ruleID": rule_id, "taskIDs": list(task_ids), "costs": list(costs)}
        if worker is not None:
            bid["worker"] = worker
        reply = self._call("POST", "/bid_on_tasks", json=[bid])
        if (not isinstance(reply, list) or len(reply) != 1 or not isinstance(reply[0], dict)
                or not isinstance(reply[0].get("taskIDs", []), list)):
            raise ProtocolError(f"/bid_on_tasks reply is not one award: {reply!r:.200}",
                                url=self.base_url)
        return reply[0]

    def handin(self, entries: list[dict], worker: str | None = None) -> None:
        """Hand in task statuses (``POST /handin``): ``[{"ruleID", "taskIDs", "status"}]``. With
        ``worker``, the server counts only the tasks that worker still holds."""
        if worker is not None:
            entries = [dict(entry, worker=worker) for entry in entries]
        self._call("POST", "/handin", json=entries)

    def heartbeat(self, worker: str) -> float:
        """Renew ``worker``'s lease on its tasks; returns the lease in seconds."""
        reply = self._call("POST", "/spoolside/heartbeat", params={"worker": worker})
        lease = reply.get("lease") if isinstance(reply, dict) else None
        if not isinstance(lease, (int, float)) or isinstance(lease, bool) or lease <= 0:
            raise ProtocolError(f"/spoolside/heartbeat reply has no lease: {reply!r:.200}",
                                url=self.base_url)
        return float(lease)

    # -- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, *, absent_ok: bool = False, **kwargs) -> Any:
        """Send one request; return its JSON (None for a 404 when ``absent_ok``)."""
        url = self.base_url + endpoint
        headers = {"Accept-Encoding": "gzip"}
        if "json" in kwargs:
            headers["Content-Type"] = "application/json"
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self._session.request(method, url, headers=headers, **kwargs)
        except requests.RequestException as exc:
            raise error_from_request_exception(exc, method, url) from exc
        if absent_ok and response.status_code == 404 and _endpoint_missing(response):
            return None
        if response.status_code >= 400:
            raise refused_from_response(response, method, endpoint)
        try:
            body = response.json()
        except ValueError as exc:
            raise ProtocolError(f"{method} {endpoint}: reply is not JSON: {response.text[:200]!r}",
                                url=url) from exc
        if isinstance(body, dict) and body.get("ok") in ("False", False):
            message = str(body.get("error", ""))
            raise RequestRefused(f"{method} {endpoint} refused: {message}",
                                 status=response.status_code, server_message=message, url=url)
        return body

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> "RuleServerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
