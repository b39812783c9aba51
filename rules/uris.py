"""``PYME-CLUSTER://`` URIs, cluster name checks and PYME's results-file naming (§4.2, §3.3)."""
from __future__ import annotations

import os
import pathlib
import posixpath
import re
from typing import NamedTuple
from urllib.parse import parse_qsl

SCHEMES = ("PYME-CLUSTER://", "pyme-cluster://")
_NAME_RE = re.compile(r"^[\w/.\-]+$")


class ClusterURI(NamedTuple):
    """A parsed cluster URI: ``serverfilter`` ('' = every server), bare ``path``, ``query``."""

    serverfilter: str
    path: str
    query: dict

    @property
    def uri(self) -> str:
        """The URI again, with the canonical upper-case scheme (query dropped)."""
        return make_cluster_uri(self.path, self.serverfilter)


def is_cluster_uri(text: str) -> bool:
    """True for ``PYME-CLUSTER://...`` or ``pyme-cluster://...`` (PYME's only two spellings)."""
    return text.startswith(SCHEMES)


def parse_cluster_uri(uri: str) -> ClusterURI:
    """Split a cluster URI (or a bare cluster-relative path) into serverfilter, path and query.

    ``PYME-CLUSTER://lab2/u/s1.pcs?table=FitResults`` → ``("lab2", "u/s1.pcs", {"table": "FitResults"})``;
    a bare ``u/s1.pcs`` gives serverfilter ``''``. Leading slashes of the path are dropped.
    """
    if not isinstance(uri, str):
        raise TypeError(f"cluster URI must be a string, not {type(uri).__name__}")
    rest = uri
    serverfilter = ""
    if is_cluster_uri(uri):
        rest = uri[len(SCHEMES[0]):]
        serverfilter, sep, rest = rest.partition("/")
        if not sep:
            rest = ""
    path, _, query_text = rest.partition("?")
    query = dict(parse_qsl(query_text, keep_blank_values=True)) if query_text else {}
    return ClusterURI(serverfilter, path.lstrip("/"), query)


def cluster_path(uri_or_path: str) -> str:
    """The bare cluster-relative path of a URI or path (serverfilter and query dropped)."""
    return parse_cluster_uri(uri_or_path).path


def make_cluster_uri(path: str, serverfilter: str = "") -> str:
    """``PYME-CLUSTER://<serverfilter>/<path>``; a path that already is a URI is returned unchanged."""
    if is_cluster_uri(path):
        return path
    return f"{SCHEMES[0]}{serverfilter}/{path.lstrip('/')}"


def check_name(path: str) -> str:
    """Check a cluster name (§4.1, §8.24); return its bare path.

    Raises
    ------
    ValueError
        if the path is empty, has characters outside ``[A-Za-z0-9_/.-]`` (``~`` included) or a
        ``..`` component.
    """
    bare = cluster_path(path)
    if not bare:
        raise ValueError(f"empty cluster name in {path!r}")
    if "~" in bare:
        raise ValueError(f"cluster name {bare!r} contains '~', which PYME forbids "
                         "(it separates rule and task IDs)")
    if not _NAME_RE.match(bare):
        bad = sorted({c for c in bare if not re.match(r"[\w/.\-]", c)})
        raise ValueError(f"cluster name {bare!r} contains characters not allowed on a PYME cluster: "
                         f"{' '.join(repr(c) for c in bad)} (allowed: letters, digits, _ / . -)")
    if ".." in bare.split("/"):
        raise ValueError(f"cluster name {bare!r} contains a '..' component")
    return bare


def series_stub(series_uri: str) -> str:
    """The series' base name without extension: ``.../s1.pcs`` → ``s1``."""
    name = posixpath.basename(cluster_path(series_uri).rstrip("/"))
    return posixpath.splitext(name)[0]


def series_dir(series_uri: str) -> str:
    """The bare cluster path of the folder holding the series (``''`` at the root)."""
    return posixpath.dirname(cluster_path(series_uri).rstrip("/"))


def results_filename_for(series_uri: str) -> str:
    """PYME's ``genClusterResultFileName``: ``u/d/s1.pcs`` → ``u/d/analysis/s1.h5r`` (relative)."""
    return posixpath.join(series_dir(series_uri), "analysis", series_stub(series_uri) + ".h5r")


def local_path(root: str | os.PathLike, uri_or_path: str) -> pathlib.Path:
    """Where a cluster file lies in a data folder ``root`` on this machine (the embedded
    cluster's); ValueError for a path that would leave it."""
    base = pathlib.Path(root).resolve()
    target = (base / cluster_path(uri_or_path).strip("/")).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"{uri_or_path!r} is not inside the data folder {base}")
    return target
