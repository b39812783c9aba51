"""Text for word-wrapped labels that must not widen their pane: long paths and URIs made
breakable."""
from __future__ import annotations


def breakable(text: str, run: int = 16) -> str:
    """``text`` with zero-width spaces after ``/ _ - .`` and inside longer unbroken runs, so a
    word-wrapped label breaks a long path or URI instead of clipping it (show the plain text in
    the tooltip: the spaces would come along when copied)."""
    out, since = [], 0
    for char in text:
        out.append(char)
        since = 0 if char.isspace() else since + 1
        if char in "/_-." or since >= run:
            out.append("\u200b")
            since = 0
    return "".join(out)
