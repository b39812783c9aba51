"""PYME metadata: a flat dotted-key handler that reads and writes PYME's ``metadata.json`` (§5.3)."""
from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON-ready Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


class MetaDataHandler:
    """Metadata entries by dotted name (``Camera.ADOffset``); PYME's MDHandler methods plus a dict view.

    Accepts a mapping or another handler (anything with ``getEntryNames``/``getEntry``).
    """

    def __init__(self, entries: Mapping | "MetaDataHandler" | None = None):
        self._entries: dict[str, Any] = {}
        if entries is not None:
            self.update(entries)

    # -- PYME's interface -----------------------------------------------------------------
    def getEntry(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no metadata entry {name!r}") from None

    def setEntry(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"metadata names are non-empty strings, not {name!r}")
        self._entries[name] = value

    def getOrDefault(self, name: str, default: Any = None) -> Any:
        return self._entries.get(name, default)

    def getEntryNames(self) -> list[str]:
        return sorted(self._entries)

    def update(self, other: Mapping | "MetaDataHandler") -> None:
        """Copy every entry of a mapping or handler over this one's."""
        if hasattr(other, "getEntryNames") and hasattr(other, "getEntry"):
            for name in other.getEntryNames():
                self.setEntry(name, other.getEntry(name))
        elif isinstance(other, Mapping):
            for name, value in other.items():
                self.setEntry(name, value)
        else:
            raise TypeError(f"cannot update metadata from {type(other).__name__}")

    def copyEntriesFrom(self, other: Mapping | "MetaDataHandler") -> None:
        self.update(other)

    def to_JSON(self) -> str:
        """PYME's form: one object, keys sorted, indented by 2."""
        return json.dumps(self._entries, indent=2, sort_keys=True, default=_plain)

    @classmethod
    def from_JSON(cls, text: str | bytes) -> "MetaDataHandler":
        try:
            entries = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"metadata is not JSON: {exc}") from exc
        if not isinstance(entries, dict):
            raise ValueError(f"metadata JSON must be an object, not {type(entries).__name__}")
        return cls(entries)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "MetaDataHandler":
        """Read a ``metadata.json`` file from disk."""
        return cls.from_JSON(pathlib.Path(path).read_bytes())

    def copy(self) -> "MetaDataHandler":
        return type(self)(json.loads(self.to_JSON()))

    def to_dict(self) -> dict[str, Any]:
        return dict(self._entries)

    # -- dict view ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        return self.getEntry(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.setEntry(name, value)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.getEntryNames())

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        return self.getEntryNames()

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self._entries[name]) for name in self.getEntryNames()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._entries.get(name, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MetaDataHandler):
            return self._entries == other._entries
        return NotImplemented

    def __repr__(self) -> str:
        return f"MetaDataHandler({len(self._entries)} entries)"


#: What metadata readers accept: a plain mapping of dotted keys or a handler.
MetadataLike = Mapping[str, Any] | MetaDataHandler

_EM_GAIN_REGISTER_TO_TRUE: dict[float, float] = {200: 100, 150: 20, 0: 1.0}


def fix_em_gain(md: MetaDataHandler) -> MetaDataHandler:
    """PYME's ``MetaData.fixEMGain``: derive ``Camera.TrueEMGain`` from the gain register (§5.3).

    Only when ``Camera.EMGain`` exists and ``Camera.TrueEMGain`` does not: register 200 → 100,
    150 → 20, 0 → 1.0 (other values set nothing); a ``Simulated Standard CCD Camera`` then gets
    TrueEMGain = EMGain. Returns ``md`` (changed in place).
    """
    if "Camera.EMGain" in md and "Camera.TrueEMGain" not in md:
        gain = md["Camera.EMGain"]
        if isinstance(gain, (int, float)) and gain in _EM_GAIN_REGISTER_TO_TRUE:
            md["Camera.TrueEMGain"] = _EM_GAIN_REGISTER_TO_TRUE[gain]
        if md.getOrDefault("Camera.Name") == "Simulated Standard CCD Camera":
            md["Camera.TrueEMGain"] = gain
    return md
