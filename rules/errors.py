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
        return ClusterUnreachable(url, f"{method} failed: {exc}")
    return ProtocolError(f"{method} {url}: {exc}", url=url)


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
