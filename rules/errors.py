"""The engine's exception family: every cluster failure is a :class:`ClusterError`."""
from __future__ import annotations


class ClusterError(RuntimeError):
    """A cluster server could not be used (base class of the engine's errors)."""


class ClusterUnreachable(ClusterError):
    """A server did not answer: connection refused, reset or timed out."""

    def __init__(self, url: str, reason: str = ""):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url}" + (f": {reason}" if reason else ""))


class RequestRefused(ClusterError):
    """A server answered with an error status or an ``{"ok": "False", "error": ...}`` body."""

    def __init__(self, message: str, *, status: int | None = None, server_message: str = "",
                 url: str = ""):
        self.status = status
        self.server_message = server_message
        self.url = url
        super().__init__(message)


class ProtocolError(ClusterError):
    """A server's reply is not what the protocol says (not JSON, wrong shape, missing keys)."""

    def __init__(self, message: str, *, url: str = ""):
        self.url = url
        super().__init__(message)



def _causes(exc: BaseException):
    """The exception, its chained causes and exceptions wrapped in its args (requests/urllib3 nest)."""
    seen, todo = set(), [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            nested = getattr(item, attr, None)
            if isinstance(nested, BaseException):
                todo.append(nested)


def error_from_request_exception(exc: Exception, method: str, url: str) -> ClusterError:
    """Map a ``requests`` exception to the engine's family (for ``raise ... from exc``)."""
    import http.client

    import requests

    for cause in _causes(exc):
        # A status line that is not HTTP means the peer speaks something else. A peer that closes
        # without replying (RemoteDisconnected, also a BadStatusLine) counts as unreachable.
        if (isinstance(cause, http.client.BadStatusLine)
                and not isinstance(cause, http.client.RemoteDisconnected)):
            return ProtocolError(f"{method} {url}: reply is not HTTP ({cause!r})", url=url)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return ClusterUnreachable(url, unreachable_reason(exc, method))
    return ProtocolError(f"{method} {url}: {exc}", url=url)


def no_answer(exc: Exception) -> bool:
    """True when the server accepted the connection and did not answer in time (a read timeout,
    also when urllib3 wraps it): sending the request again would only wait as long again."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    return any(isinstance(c, (requests.ReadTimeout, ReadTimeoutError)) for c in _causes(exc))


def unreachable_reason(exc: Exception, method: str = "") -> str:
    """A few words for why a request got no answer, instead of urllib3's nested repr."""
    import requests

    prefix = f"{method} failed: " if method else ""
    if isinstance(exc, requests.ConnectTimeout):
        return prefix + "no connection (timed out)"
    if no_answer(exc):
        return prefix + "connected, but no answer (timed out)"
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return prefix + "connection refused"
    return prefix + short_reason(str(exc))


_REASONS = (("connection refused", "connection refused"), ("timed out", "no answer (timed out)"),
            ("name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
            ("temporary failure in name resolution", "unknown host"),
            ("connection reset", "connection reset"), ("connection aborted", "connection lost"),
            ("remotedisconnected", "connection lost"), ("no route to host", "no route to host"),
            ("network is unreachable", "network unreachable"))


def short_reason(reason: str) -> str:
    """A few words for why a server did not answer, from an exception's (long) text."""
    lowered = reason.lower()
    for needle, words in _REASONS:
        if needle in lowered:
            return words
    return reason if len(reason) <= 100 else reason[:99] + "…"


def server_message(response) -> str:
    """The error text of a reply: the ``error`` of a JSON body, else the (shortened) body text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error") not in (None, ""):
        return str(body["error"])
    text = (response.text or "").strip()
    return text[:500] + ("…" if len(text) > 500 else "")


def refused_from_response(response, method: str, what: str) -> RequestRefused:
    """A :class:`RequestRefused` for an error status, naming the request and the server's text."""
    message = server_message(response)
    return RequestRefused(f"{method} {what} refused ({response.status_code}): {message}",
                          status=response.status_code, server_message=message, url=response.url)


def check_base_url(url: str) -> str:
    """Validate an ``http(s)://host:port`` server URL; return it without trailing slashes."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"server URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/")
