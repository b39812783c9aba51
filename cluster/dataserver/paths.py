"""Cluster names and root confinement: nothing outside the data root is ever read or written.

A request path is percent-decoded exactly once; what remains must match PYME's name rule
``^[\\w/.\\-]+$`` (so a leftover ``%``, ``~``, ``\\``, NUL or space is refused), may not be absolute,
hold ``//`` or ``.``/``..`` components, and its real path (symlinks resolved) must lie inside the
root.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from cluster.h5r import TMP_PREFIX  # noqa: F401 - the prefix of our hidden temporary files
from cluster.http_base import HTTPError

#: PYME's ``unifiedIO.check_name`` rule for cluster paths.
NAME_RE = re.compile(r"^[\w/.\-]+$")

#: Glob patterns may also use the glob wildcards.
GLOB_RE = re.compile(r"^[\w/.\-*?\[\]!]+$")



@dataclass(frozen=True)
class Target:
    """A checked request target: ``name`` relative to the root, ``path`` its real path."""

    name: str
    path: str
    trailing_slash: bool


def decode_once(raw: str) -> str:
    """Percent-decode ``raw`` once (UTF-8); a ``%`` left afterwards means double encoding."""
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(403, "path is not valid UTF-8 after percent-decoding") from exc
    if "%" in text:
        raise HTTPError(403, "path still holds '%' after one percent-decoding (double encoding?)")
    return text


def check_name(name: str, pattern: re.Pattern = NAME_RE) -> None:
    """Refuse names that are not plain relative cluster names (403)."""
    if not name:
        return
    if "\x00" in name or "\\" in name:
        raise HTTPError(403, "NUL and backslash are not allowed in names")
    if not pattern.match(name):
        raise HTTPError(403, f"name {name!r} does not match {pattern.pattern}")
    if name.startswith("/") or "//" in name:
        raise HTTPError(403, f"name {name!r} is absolute or holds '//'")
    if any(part in (".", "..") for part in name.split("/")):
        raise HTTPError(403, f"name {name!r} holds a '.' or '..' component")


def inside(root: str, path: str | os.PathLike) -> bool:
    """Whether ``path`` (symlinks resolved) is ``root`` or lies inside it; ``root`` must be a
    real path. The one root-confinement check of the cluster."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def confine(root: str, name: str) -> str:
    """Real path of ``root/name``; 403 unless it is the root or inside it."""
    path = os.path.realpath(os.path.join(root, name))
    if not inside(root, path):
        raise HTTPError(403, f"{name!r} resolves outside the data root")
    return path


def resolve(root: str, raw_path: str) -> Target:
    """Check a raw (still percent-encoded, query-less) request path against ``root``.

    ``root`` must already be a real path (``os.path.realpath``).
    """
    decoded = decode_once(raw_path)
    if not decoded.startswith("/"):
        raise HTTPError(403, "request path must start with '/'")
    name = decoded[1:]
    check_name(name)
    trailing = name.endswith("/")
    name = name.rstrip("/")
    return Target(name=name, path=confine(root, name), trailing_slash=trailing)


def resolve_name(root: str, name: str) -> Target:
    """Check an already-decoded relative name (e.g. after an ``/__aggregate_…/`` prefix)."""
    if "%" in name:
        raise HTTPError(403, "name holds '%' after one percent-decoding (double encoding?)")
    check_name(name)
    if not name:
        raise HTTPError(403, "empty name")
    trailing = name.endswith("/")
    name = name.rstrip("/")
    return Target(name=name, path=confine(root, name), trailing_slash=trailing)
