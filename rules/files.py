"""The one way Spoolside writes a local file so that a failure leaves no half-written file: the
data goes to a temporary file beside the target, which is renamed onto it only when complete."""
from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A temporary path beside ``target`` to write to; it replaces ``target`` when the block ends
    without an exception and is removed otherwise (the old ``target``, if any, is then intact)."""
    target = pathlib.Path(target)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    path = pathlib.Path(temporary)
    try:
        yield path
        os.replace(path, target)
    finally:
        path.unlink(missing_ok=True)


def atomic_write(target: str | os.PathLike, data: bytes | str) -> pathlib.Path:
    """Write ``data`` (text as UTF-8) to ``target`` atomically; return the target's path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(target) as path:
        path.write_bytes(payload)
    return pathlib.Path(target)
