"""Named chain presets in the per-user config folder, and the Presets menu over them.

A preset is ``<folder>/<name>.yaml`` in PYME's ``[[FactoryClass, kwargs], ...]`` form (read and
written by ``rules.presets``), so presets move between Spoolside and PYME's chained-analysis page.
:class:`PresetStore` is the plain part; :class:`PresetsMenu` adds the menu and its dialogs.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
)

from rules.presets import (
    PresetError,
    import_pyme_presets,
    load_preset,
    pyme_differences,
    save_preset,
)

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[\w][\w\-. ]{0,99}$")


class PresetStore:
    """Presets as files in one folder: list, save, load, rename, delete, import."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        check_preset_name(name)
        return self.folder / f"{name}.yaml"

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted((p.stem for p in self.folder.glob("*.yaml")), key=str.lower)

    def save(self, name: str, factories: list) -> Path:
        path = self.path(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_preset(path, factories)
        logger.info("saved preset %s", path)
        return path

    def load(self, name: str) -> list:
        path = self.path(name)
        if not path.is_file():
            raise PresetError(path, f"no preset called {name!r}")
        return load_preset(path)

    def rename(self, old: str, new: str) -> None:
        source, target = self.path(old), self.path(new)
        if target.exists():
            raise PresetError(target, f"a preset called {new!r} already exists")
        try:
            source.rename(target)
        except OSError as exc:
            raise PresetError(source, f"cannot rename: {exc.strerror or exc}") from exc

    def delete(self, name: str) -> None:
        path = self.path(name)
        try:
            path.unlink()
        except OSError as exc:
            raise PresetError(path, f"cannot delete: {exc.strerror or exc}") from exc

    def import_folder(self, folder: str | Path) -> tuple[list[str], list[PresetError]]:
        """Copy the presets of a PYME config folder (or its ``chained_analysis/``) in.

        Returns the names given to the imported presets and the files that could not be used.
        A preset whose name is taken gets ``_1``, ``_2``, ... (nothing is overwritten).
        """
        found, problems = import_pyme_presets(folder)
        imported = []
        for name, factories in found.items():
            target = _free_name(str(name), set(self.names()))
            self.save(target, factories)
            imported.append(target)
        return imported, problems


def check_preset_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.strip() != name:
        raise PresetError(name, "not a usable preset name (letters, digits, - _ . and spaces)")
    return name


def preset_name_problem(name: str) -> str:
    """Why ``name`` cannot name a preset ("" when it can)."""
    if not name.strip():
        return "type a name"
    try:
        check_preset_name(name)
    except PresetError:
        return "use letters, digits, spaces and - _ . only (no leading or trailing spaces)"
    return ""


class PresetNameDialog(QDialog):
    """Asks for a preset name; a name that cannot be used is flagged under the field and OK
    stays off."""

    def __init__(self, title: str, default: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.name_edit = QLineEdit(default)
        self.name_edit.setMinimumWidth(self.fontMetrics().horizontalAdvance("x" * 32))
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #b00020;")
        self.problem.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.Ok)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Preset name", self.name_edit)
        form.addRow("", self.problem)
        form.addRow(self.buttons)
        self.name_edit.textChanged.connect(self._check)
        self._check()

    def name(self) -> str:
        return self.name_edit.text()

    def accept(self) -> None:
        if not preset_name_problem(self.name()):
            super().accept()

    def _check(self, *_args) -> None:
        problem = preset_name_problem(self.name())
        shown = problem if self.name() else ""   # an empty field is not an error yet
        self.problem.setText(f"⚠ {shown}" if shown else "")
        self.problem.setVisible(bool(shown))
        self.ok_button.setEnabled(not problem)


def _free_name(name: str, taken: set[str]) -> str:
    name = re.sub(r"[^\w\-. ]", "_", name).strip() or "preset"
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


class PresetsMenu(QMenu):
    """The Presets menu: save (Ctrl+S), save as, load, rename, delete, import from PYME.

    ``chain_source()`` returns the current chain's factories (for saving).

    Signals
    -------
    presetLoaded(str, list)
        A preset was loaded: its name and its factories.
    message(str)
        Something to show in the status bar.
    """

    presetLoaded = pyqtSignal(str, list)
    message = pyqtSignal(str)

    def __init__(self, store: PresetStore, chain_source, parent=None):
        super().__init__("&Presets", parent)
        self.store = store
        self._chain_source = chain_source
        self.current_name: str | None = None
        #: why PYME would run the last saved preset differently ([] when it would not)
        self.pyme_differences: list[str] = []
        self.difference_box: QMessageBox | None = None
        self.save_action = self.addAction("&Save Preset", self._on_save)
        self.save_action.setShortcut("Ctrl+S")
        self.save_as_action = self.addAction("Save Preset &As…", self._on_save_as)
        self.save_as_action.setShortcut("Ctrl+Shift+S")
        self.load_menu = self.addMenu("&Load")
        self.rename_action = self.addAction("&Rename…", self._on_rename)
        self.delete_action = self.addAction("&Delete…", self._on_delete)
        self.addSeparator()
        self.import_action = self.addAction("&Import from PYME…", self._on_import)
        self.import_action.setToolTip("Copy presets from a PYME config folder's chained_analysis/")
        self.aboutToShow.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the Load submenu from the folder."""
        self.load_menu.clear()
        names = self.store.names()
        for name in names:
            action = self.load_menu.addAction(name)
            action.triggered.connect(lambda _checked=False, n=name: self.load(n))
        if not names:
            self.load_menu.addAction("(no presets yet)").setEnabled(False)
        for action in (self.rename_action, self.delete_action):
            action.setEnabled(bool(names))

    # -- operations (no dialogs; errors go to the message box or are raised) --------------------
    def save(self, name: str) -> bool:
        """Save the chain as ``name``; when PYME would run it differently, say how (status bar
        and a non-blocking message box), from ``rules.presets.pyme_differences``."""
        factories = self._chain_source()
        try:
            self.store.save(name, factories)
        except (PresetError, OSError, ValueError) as exc:
            self._warn("Could not save the preset", exc)
            return False
        self.current_name = name
        self.refresh()
        self.pyme_differences = pyme_differences(factories)
        if not self.pyme_differences:
            self.message.emit(f"Saved preset {name!r}")
            return True
        self.message.emit(f"Saved preset {name!r} — PYME would run it differently: "
                          + "; ".join(self.pyme_differences))
        text = (f"Saved preset {name!r}. Spoolside runs it as shown, but PYME's chained-analysis "
                "page would not build the same chain from it:\n\n"
                + "\n".join(f"• {d}" for d in self.pyme_differences))
        logger.info("%s", text)
        if self.parentWidget() is not None and self.parentWidget().isVisible():
            box = QMessageBox(QMessageBox.Warning, "Preset saved — differs in PYME", text,
                              QMessageBox.Ok, self.parentWidget())
            box.setModal(False)
            box.setAttribute(Qt.WA_DeleteOnClose)
            box.show()
            self.difference_box = box
        return True

    def load(self, name: str) -> bool:
        try:
            factories = self.store.load(name)
        except (PresetError, OSError) as exc:
            self._warn(f"Could not load preset {name!r}", exc)
            return False
        self.current_name = name
        self.presetLoaded.emit(name, list(factories))
        self.message.emit(f"Loaded preset {name!r}")
        return True

    def _warn(self, title: str, exc: BaseException) -> None:
        logger.warning("%s: %s", title, exc)
        self.message.emit(f"{title}: {exc}")
        if self.isVisible() or self.parentWidget() is not None and self.parentWidget().isVisible():
            QMessageBox.warning(self.parentWidget(), "Presets", f"{title}.\n\n{exc}")

    # -- dialogs --------------------------------------------------------------------------------
    def _ask_name(self, title: str, default: str = "") -> str | None:
        dialog = PresetNameDialog(title, default, self.parentWidget())
        return dialog.name() if dialog.exec_() == QDialog.Accepted else None

    def _on_save(self) -> None:
        if self.current_name:
            self.save(self.current_name)
        else:
            self._on_save_as()

    def _on_save_as(self) -> None:
        name = self._ask_name("Save preset", self.current_name or "")
        if name is None:
            return
        if name in self.store.names() and QMessageBox.question(
                self.parentWidget(), "Save preset",
                f"Replace the preset {name!r}?") != QMessageBox.Yes:
            return
        self.save(name)

    def _pick(self, title: str) -> str | None:
        names = self.store.names()
        if not names:
            return None
        current = names.index(self.current_name) if self.current_name in names else 0
        name, ok = QInputDialog.getItem(self.parentWidget(), title, "Preset:", names, current, False)
        return name if ok else None

    def _on_rename(self) -> None:
        old = self._pick("Rename preset")
        if old is None:
            return
        new = self._ask_name("Rename preset", old)
        if new is None or new == old:
            return
        try:
            self.store.rename(old, new)
        except PresetError as exc:
            self._warn("Could not rename the preset", exc)
            return
        if self.current_name == old:
            self.current_name = new
        self.refresh()

    def _on_delete(self) -> None:
        name = self._pick("Delete preset")
        if name is None or QMessageBox.question(
                self.parentWidget(), "Delete preset", f"Delete the preset {name!r}?") != QMessageBox.Yes:
            return
        try:
            self.store.delete(name)
        except PresetError as exc:
            self._warn("Could not delete the preset", exc)
            return
        if self.current_name == name:
            self.current_name = None
        self.refresh()

    def _on_import(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.parentWidget(), "PYME config folder",
                                                  str(Path.home() / ".PYME"))
        if not folder:
            return
        try:
            names, problems = self.store.import_folder(folder)
        except (PresetError, OSError) as exc:
            self._warn("Could not import presets", exc)
            return
        self.refresh()
        text = (f"Imported {len(names)} preset(s): {', '.join(names)}" if names
                else f"No usable presets in {folder}")
        if problems:
            text += f"; skipped {len(problems)}: " + "; ".join(str(p) for p in problems[:3])
        self.message.emit(text)
