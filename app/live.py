"""The window's Live tab and its two companions: exporting localisations and analysing new series
automatically.

:class:`LivePanel` wraps :class:`widgets.live_view.LiveView` with what it follows and an
*Export localisations…* button; :func:`export_localisations_dialog` asks for a file and exports on
a pool thread; :class:`AutoAnalysis` runs a :class:`rules.autolaunch.AutoLauncher` for the window
with a preset and a pattern that are kept in the settings.
"""
from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from PyQt5.QtCore import QObject, Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from rules.autolaunch import AutoLauncher, Launch, series_glob
from rules.dataserver_client import DataClient
from rules.errors import ClusterError
from rules.export import cluster_batches, export_localisations
from rules.presets import PresetError, load_preset
from rules.ruleserver_client import RuleServerClient
from rules.uris import cluster_path, parse_cluster_uri
from widgets.background import BackgroundCall, CallSignals, shared_pool
from widgets.live_view import LiveView

logger = logging.getLogger(__name__)


def results_file(uris) -> str | None:
    """The first ``.h5r`` among output URIs, without its ``?table=`` query (None if none)."""
    for uri in uris:
        parsed = parse_cluster_uri(uri)
        if parsed.path.endswith(".h5r"):
            return parsed.uri
    return None


class LivePanel(QWidget):
    """The Live tab: what is followed, the live view, and *Export localisations…*."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.view = LiveView()
        self.title = self.view.title_label
        self.title.setText("Launch a chain with a localisation step to watch it here.")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Export these localisations to CSV (ThunderSTORM's "
                                      "columns) or HDF5")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self.export)
        self.view.title_row.addWidget(self.export_button, 0, Qt.AlignTop)
        self._data: DataClient | None = None
        self._rules: RuleServerClient | None = None
        self.results_uri: str | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)

    def follow(self, dataservers, serverfilter: str, results_uri: str,
               series_uri: str | None = None, ruleserver: str | None = None,
               rule_id: str | None = None) -> None:
        """Follow ``results_uri`` (written by ``rule_id`` on ``ruleserver`` for ``series_uri``)."""
        self.close_clients()
        self._data = DataClient(list(dataservers), serverfilter)
        self._rules = RuleServerClient(ruleserver) if ruleserver and rule_id else None
        self.results_uri = results_uri
        self.view.set_title(f"<b>{posixpath.basename(cluster_path(results_uri))}</b>",
                            results_uri)
        self.export_button.setEnabled(True)
        self.view.follow(self._data, results_uri, series_uri, self._rules, rule_id)

    def export(self) -> None:
        if self._data is not None and self.results_uri:
            export_localisations_dialog(self, self._data, self.results_uri)

    def close_clients(self) -> None:
        self.view.stop()
        # a step still running on the pool keeps its own reference; closing only drops sessions
        for client in (self._data, self._rules):
            if client is not None:
                client.close()
        self._data = self._rules = None


def export_localisations_dialog(parent: QWidget, data: DataClient, results_uri: str) -> None:
    """Ask for a CSV/HDF5 file name and export ``results_uri`` there on a pool thread; the result
    (or the reason it failed) is shown in a message box."""
    stem = posixpath.splitext(posixpath.basename(cluster_path(results_uri)))[0]
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export localisations", str(Path.home() / f"{stem}.csv"),
        "ThunderSTORM CSV (*.csv);;HDF5 (*.h5 *.hdf5)")
    if not path:
        return
    if chosen.startswith("HDF5") and not path.lower().endswith((".h5", ".hdf5")):
        path += ".h5"
    elif chosen.startswith("Thunder") and not path.lower().endswith(".csv"):
        path += ".csv"
    signals = CallSignals()  # kept alive by the call, even if ``parent`` goes first

    def done(_tag: str, count: int) -> None:
        QMessageBox.information(parent, "Export localisations",
                                f"{count:,} localisations written to {path}.")

    def failed(_tag: str, message: str) -> None:
        QMessageBox.warning(parent, "Export localisations", f"Not exported: {message}")

    signals.done.connect(done)
    signals.failed.connect(failed)
    # the file dialog already asked about replacing an existing file
    shared_pool().start(BackgroundCall(
        "export", lambda: export_localisations(cluster_batches(data, results_uri), path,
                                               overwrite=True), signals))


class AutoAnalysis(QObject):
    """*Analyse new series automatically*: a preset and a series pattern, kept in ``settings``
    (``auto_analysis/…``), and the auto-launcher running for the window's cluster.

    Signals: ``launched(str)`` one line per launch (or failed launch), ``stateChanged(str)``.
    """

    launched = pyqtSignal(str)
    stateChanged = pyqtSignal(str)

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.settings = settings
        self._launcher: AutoLauncher | None = None
        self._cluster = None

    @property
    def enabled(self) -> bool:
        return str(self.settings.value("auto_analysis/enabled", "false")).lower() == "true"

    @property
    def preset(self) -> str:
        return str(self.settings.value("auto_analysis/preset", "") or "")

    @property
    def pattern(self) -> str:
        return str(self.settings.value("auto_analysis/pattern", "") or "")

    @staticmethod
    def check(preset: str, pattern: str) -> list:
        """The chain of ``preset``; PresetError/ValueError with the reason otherwise."""
        series_glob(pattern)
        return load_preset(preset)

    def configure(self, preset: str, pattern: str, enabled: bool) -> None:
        """Store the setting (checked first: raises with the reason) and apply it."""
        if enabled:
            self.check(preset, pattern)
        self.settings.setValue("auto_analysis/preset", preset)
        self.settings.setValue("auto_analysis/pattern", pattern)
        self.settings.setValue("auto_analysis/enabled", "true" if enabled else "false")

    def start(self, address) -> None:
        """(Re)start for the cluster at ``address`` (an ``app.launcher.ClusterAddress``) when
        enabled; the first look at the cluster happens on the launcher's thread."""
        self.stop()
        if not self.enabled or address is None:
            self.stateChanged.emit("")
            return
        try:
            factories = self.check(self.preset, self.pattern)
        except (PresetError, ValueError, OSError) as exc:
            self.stateChanged.emit(f"Automatic analysis off: {exc}")
            return
        self._cluster = address.connect()
        self._launcher = AutoLauncher(self._cluster, factories, self.pattern,
                                      on_launch=self._report).start()
        self.stateChanged.emit(f"Analysing new series {self._launcher.glob} automatically with "
                               f"{Path(self.preset).stem}")

    def _report(self, launch: Launch) -> None:  # on the launcher's thread: signals are queued
        if launch.error is None:
            self.launched.emit(f"Auto-launched rule {launch.rule_id} on {launch.series_uri}")
        else:
            self.launched.emit(f"Auto-launch on {launch.series_uri} failed: {launch.error}")

    def stop(self) -> None:
        if self._launcher is not None:
            self._launcher.stop(timeout=0.5)
            self._launcher = None
        if self._cluster is not None:
            try:
                self._cluster.close()
            except ClusterError:
                pass
            self._cluster = None


class AutoAnalysisDialog(QDialog):
    """Edit the automatic-analysis setting: on/off, preset file and series pattern."""

    def __init__(self, auto: AutoAnalysis, presets_folder: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Analyse New Series Automatically")
        self.auto = auto
        self.presets_folder = presets_folder
        self.preset_edit = QLineEdit(auto.preset)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose)
        self.pattern_edit = QLineEdit(auto.pattern or "auto/*.pcs")
        self.pattern_edit.setToolTip("A glob on the series' cluster path (e.g. auto/*.pcs) or a "
                                     "folder; {{date}} is today's PYME Acquire day folder "
                                     "(2026_1_5), so */{{date}}/*.pcs follows today's "
                                     "acquisitions")
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #b00")
        self.error_label.setWordWrap(True)
        preset_row = QHBoxLayout()
        preset_row.addWidget(self.preset_edit, 1)
        preset_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Preset", preset_row)
        form.addRow("Series pattern", self.pattern_edit)
        buttons = QDialogButtonBox()
        self.on_button = buttons.addButton("Analyse Automatically", QDialogButtonBox.AcceptRole)
        self.off_button = buttons.addButton("Turn Off", QDialogButtonBox.DestructiveRole)
        buttons.addButton(QDialogButtonBox.Cancel)
        self.on_button.clicked.connect(lambda: self._apply(True))
        self.off_button.clicked.connect(lambda: self._apply(False))
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Every new series that appears on the cluster and matches the "
                                "pattern is launched with the preset as soon as it starts "
                                "spooling, once."))
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    def _choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Preset", str(self.presets_folder),
                                              "Presets (*.yaml *.yml)")
        if path:
            self.preset_edit.setText(path)

    def _apply(self, enabled: bool) -> None:
        try:
            self.auto.configure(self.preset_edit.text().strip(), self.pattern_edit.text().strip(),
                                enabled)
        except (PresetError, ValueError, OSError) as exc:
            self.error_label.setText(str(exc))
            return
        self.accept()
