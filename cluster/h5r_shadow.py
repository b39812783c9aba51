"""Crash-safe writes to results files at the cost of the change, not of the file: shadow copies.

A results file that is being written to has a hidden *shadow*: a second, independent copy of the
file as it was one change ago. A change is written into the shadow in place (the change it lacks
first, then the new one), flushed and fsynced, and the shadow is then renamed over the public file
in one atomic step; the old public file (kept by a hard link made just before) becomes the next
shadow, one change behind. So:

* every reader of the public path sees a complete file holding exactly the committed changes (it
  is never written in place);
* a kill, a power cut or a full disk during a change leaves the public file as committed before
  it; the damaged shadow is thrown away and rebuilt by copying the public file on the next change;
* a change costs its own size (written twice: once into each copy), not the size of the file.

The pending change is held in memory, so a new process, a failed change, a shadow still being read
(:func:`reading`) or a file system without hard links falls back to one copy of the file. Shadows
live beside their file under fixed hidden names (prefix :data:`TMP_PREFIX`, which the data server
hides), at most two per file (so a leftover of a killed process is reused, not piled up), and are
deleted once the file has had no change for :data:`IDLE_S` seconds (:func:`drop_idle`, run by a
timer) or when the server stops (:func:`drop_all`).

A reader that keeps the public file open across two later changes (another program on this PC)
may see it change under it, as with PYME's own in-place appends; the data server's own reads hold
the HDF5 lock or register with :func:`reading`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

#: Prefix of the hidden temporary and shadow files (the data server hides and never serves them).
TMP_PREFIX = ".spoolside-tmp-"
#: Mode of results files (readable like every other served file).
FILE_MODE = 0o644
#: A shadow unused for this long is deleted (the next change copies the file once).
IDLE_S = 30.0

#: ``apply(path, changes, new)``: open the file at ``path`` (create it when ``new``), apply each
#: change in order, flush and close; return what the last change returns.
Apply = Callable[[str, list, bool], Any]


@dataclass
class _Shadow:
    path: str  # hidden path of the shadow copy
    identity: tuple[int, int]  # (device, inode) of the shadow
    public: tuple[int, int]  # (device, inode) of the public file it lags behind
    pending: list = field(default_factory=list)  # changes the public file has, the shadow not yet
    used: float = field(default_factory=time.monotonic)


_LOCK = threading.RLock()
_SHADOWS: dict[str, _Shadow] = {}  # by public path
_READING: dict[tuple[int, int], int] = {}  # (device, inode) → open raw readers in this process
_timer: threading.Timer | None = None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def shadow_names(path: str) -> tuple[str, str]:
    """The two hidden names a shadow of ``path`` may have (fixed, short whatever the name)."""
    directory, base = os.path.split(path)
    digest = hashlib.blake2b(base.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return tuple(os.path.join(directory, f"{TMP_PREFIX}shadow-{digest}-{k}.h5r")
                 for k in "ab")  # type: ignore[return-value]


def fsync_directory(directory: str) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory; its renames are journaled by NTFS
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    with open(path, "rb+") as written:
        os.fsync(written.fileno())


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):  # gone already, or (Windows) still open: left for later
        os.unlink(path)


def _forget(path: str) -> None:
    """Delete the shadow files of ``path`` (the caller holds the lock)."""
    _SHADOWS.pop(path, None)
    for name in shadow_names(path):
        _unlink(name)


def _usable(path: str, shadow: _Shadow | None) -> bool:
    return (shadow is not None and _identity(shadow.path) == shadow.identity
            and _identity(path) == shadow.public and not _READING.get(shadow.identity))


def write(path: str | os.PathLike, change: Any, apply: Apply, check: Callable[[str], None],
          explain: Callable[[BaseException], BaseException | None] = lambda exc: None) -> Any:
    """Apply ``change`` to the file at ``path`` crash-safely (see the module docstring) and return
    what ``apply`` returns. ``check(path)`` raises if a copied file is not usable (a damaged
    original is reported, not copied over). Any exception leaves the public file as it was; it is
    first passed to ``explain``, whose answer (if any) is raised instead, before the damaged copy
    is deleted (so a full disk is still full when ``explain`` looks)."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    with _LOCK:
        shadow = _SHADOWS.pop(path, None)
        if not os.path.exists(path):
            _forget(path)
            return _create(path, change, apply, explain)
        names = shadow_names(path)
        if not _usable(path, shadow):
            _forget(path)
            shadow = None
        target = shadow.path if shadow else names[0]
        pending = shadow.pending if shadow else []
        try:
            if shadow is None:
                shutil.copyfile(path, target)
                check(target)
            result = apply(target, [*pending, change], False)
            fsync_file(target)
            os.chmod(target, FILE_MODE)
            keep = names[1] if target == names[0] else names[0]
            _unlink(keep)
            try:
                os.link(path, keep)  # the public file as committed: the next shadow
                linked = True
            except OSError:
                linked = False  # no hard links here: the next change copies the file
            os.replace(target, path)
        except BaseException as exc:
            better = explain(exc)
            _unlink(target)
            if better is not None:
                raise better from exc
            raise
        fsync_directory(directory)
        if linked:
            identity, public = _identity(keep), _identity(path)
            if identity is not None and public is not None:
                _SHADOWS[path] = _Shadow(keep, identity, public, [change])
                _schedule()
        return result


def _create(path: str, change: Any, apply: Apply,
            explain: Callable[[BaseException], BaseException | None]) -> Any:
    """A new file: written whole under a temporary name, then renamed into place."""
    directory = os.path.dirname(path) or "."
    tmp = shadow_names(path)[0]
    try:
        result = apply(tmp, [change], True)
        fsync_file(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        fsync_directory(directory)
    except BaseException as exc:
        better = explain(exc)
        if better is not None:
            raise better from exc
        raise
    finally:
        _unlink(tmp)
    return result


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Mark the file at ``path`` as being read raw (streamed) in this process: while it is, it is
    never written in place, even after it stops being the public file."""
    identity = _identity(os.fspath(path))
    if identity is None:
        yield
        return
    with _LOCK:
        _READING[identity] = _READING.get(identity, 0) + 1
    try:
        yield
    finally:
        with _LOCK:
            _READING[identity] -= 1
            if not _READING[identity]:
                del _READING[identity]


def drop_idle(max_idle: float = IDLE_S) -> int:
    """Delete the shadows unused for ``max_idle`` seconds; returns how many are left."""
    now = time.monotonic()
    with _LOCK:
        for path, shadow in list(_SHADOWS.items()):
            if now - shadow.used >= max_idle:
                _forget(path)
        return len(_SHADOWS)


def drop_all(under: str | os.PathLike | None = None) -> None:
    """Delete every shadow (of files under the folder ``under``, if given)."""
    prefix = os.path.join(os.path.abspath(os.fspath(under)), "") if under is not None else ""
    with _LOCK:
        for path in list(_SHADOWS):
            if path.startswith(prefix):
                _forget(path)


def _schedule() -> None:
    """Run :func:`drop_idle` once the shadows could be idle (one timer at a time, none when no
    shadow is left)."""
    global _timer
    if _timer is not None:
        return
    _timer = threading.Timer(IDLE_S, _on_timer)
    _timer.daemon = True
    _timer.start()


def _on_timer() -> None:
    global _timer
    with _LOCK:
        _timer = None
        if drop_idle():
            _schedule()
