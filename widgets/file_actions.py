"""What a person does with a cluster file besides looking at it: *Show in folder* (the embedded
cluster's files, which lie on this machine) and *Copy URI*."""
from __future__ import annotations

import logging

from PyQt5.QtCore import QUrl
from PyQt5.QtGui import QDesktopServices, QGuiApplication

from rules.uris import local_path

logger = logging.getLogger(__name__)

#: Why *Show in folder* is off on a cluster whose files are not on this machine.
REMOTE_REASON = ("Only for the embedded cluster's files: this cluster keeps its files on its own "
                 "machine (use Copy URI)")


def show_in_folder(root: str | None, uri: str) -> str:
    """Open the system's file browser on the folder holding ``uri`` under data folder ``root``
    (the folder itself for a folder or series); returns why not ("" when opened)."""
    if not root:
        return REMOTE_REASON
    try:
        target = local_path(root, uri)
    except ValueError as exc:
        return str(exc)
    folder = target if target.is_dir() else target.parent
    if not folder.is_dir():
        return f"{folder} does not exist (yet)"
    if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
        return f"no file browser could open {folder}"
    return ""


def copy_uri(uri: str) -> None:
    QGuiApplication.clipboard().setText(uri)
