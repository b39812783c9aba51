"""PYME directory listings: ``{name: [flags, size]}`` (protocol §4.3).

Flags: 1 directory, 2 series (the directory holds ``metadata.json``), 4 series complete (it holds
``events.json``). Directory names end with ``/`` and their size is their number of entries; a file's
size is its length in bytes. Listings are computed fresh on every request (no stale caches), our own
temporary files are hidden and symlinks leading out of the root are left out.
"""
from __future__ import annotations

import os

from cluster.dataserver.paths import TMP_PREFIX, inside

FLAG_DIRECTORY = 1
FLAG_SERIES = 2
FLAG_COMPLETE = 4


def _directory_entry(path: str) -> list[int]:
    flags, count = FLAG_DIRECTORY, 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith(TMP_PREFIX):
                    continue
                count += 1
                if entry.name == "metadata.json":
                    flags |= FLAG_SERIES
                elif entry.name == "events.json":
                    flags |= FLAG_COMPLETE
    except OSError:
        pass
    return [flags, count]


def list_directory(root: str, path: str) -> dict[str, list[int]]:
    """The PYME listing of directory ``path`` (inside the real path ``root``), names sorted."""
    listing: dict[str, list[int]] = {}
    with os.scandir(path) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(TMP_PREFIX):
                continue
            try:
                if entry.is_symlink() and not inside(root, entry.path):
                    continue
                if entry.is_dir():
                    listing[entry.name + "/"] = _directory_entry(entry.path)
                elif entry.is_file():
                    listing[entry.name] = [0, entry.stat().st_size]
            except OSError:
                continue  # vanished or unreadable while listing
    return listing
