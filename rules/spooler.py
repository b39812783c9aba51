"""The spooler protocol :class:`~rules.localisation.SpoolLocalLocalizationRule` follows.

A spooler is the in-process object writing a live series to the cluster (PYME: the acquisition's
spooler or storage backend). The rule needs, and only uses:

- ``metadata``: the series metadata, a :class:`~rules.metadata.MetaDataHandler` (or any object with
  ``to_JSON()``/``copyEntriesFrom``-style access) or a plain ``dict`` of dotted keys;
- ``get_n_frames() -> int``: frames written to the cluster so far (each one already readable there);
- ``finished() -> bool``: True once spooling has ended (no more frames will come);
- an event logger, under either PYME spelling ``evtLogger`` (spooler) or ``event_logger``
  (acquisition backend, §8.17), that has ``to_JSON()`` returning ``[[name, descr, time], ...]`` as JSON
  text, or an ``events`` list of such triples;
- optionally ``add_frame_listener(callback)`` (and ``remove_frame_listener(callback)``): the rule
  registers its ``notify`` there, and the spooler calls it (no arguments, from any thread) after
  each frame is written, so tasks are released within ~100 ms instead of at the next 1 s poll.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Protocol, runtime_checkable

from .metadata import MetaDataHandler

logger = logging.getLogger(__name__)


@runtime_checkable
class Spooler(Protocol):
    """What a live acquisition offers a :class:`~rules.localisation.SpoolLocalLocalizationRule`."""

    metadata: Any

    def get_n_frames(self) -> int: ...

    def finished(self) -> bool: ...


@runtime_checkable
class FrameNotifier(Protocol):
    """A spooler that can tell the rule about new frames."""

    def add_frame_listener(self, callback: Callable[[], None]) -> None: ...


def event_logger(spooler) -> Any | None:
    """The spooler's event logger under either PYME spelling, or None."""
    for name in ("evtLogger", "event_logger"):
        logger_obj = getattr(spooler, name, None)
        if logger_obj is not None:
            return logger_obj
    return None


def spooler_events(spooler) -> list[list]:
    """The spooler's events as ``[[name, description, time], ...]`` (empty when it logs none)."""
    source = event_logger(spooler)
    if source is None:
        return []
    if callable(getattr(source, "to_JSON", None)):
        text = source.to_JSON()
        try:
            events = json.loads(text) if isinstance(text, (str, bytes)) else text
        except ValueError as exc:
            raise ValueError(f"spooler event logger's to_JSON() is not JSON: {exc}") from exc
    else:
        events = getattr(source, "events", None)
    if events is None:
        return []
    result = []
    for event in events:
        if not isinstance(event, (list, tuple)) or len(event) < 3:
            raise ValueError(f"spooler event {event!r} is not [name, description, time]")
        result.append([event[0], event[1], event[2]])
    return result


def spooler_metadata(spooler):
    """The spooler's metadata as a :class:`~rules.metadata.MetaDataHandler`."""
    source = getattr(spooler, "metadata", None)
    if source is None:
        source = getattr(spooler, "md", None)
    md = MetaDataHandler()
    if source is None:
        return md
    if isinstance(source, dict):
        for key, value in source.items():
            md.setEntry(key, value)
    elif hasattr(source, "to_JSON"):
        md = MetaDataHandler.from_JSON(source.to_JSON())
    else:
        md.copyEntriesFrom(source)
    return md
