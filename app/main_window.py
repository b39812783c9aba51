"""The Spoolside main window: chain editor and metadata on the left, rules, progress and results
on the right, the cluster's series in a dock.

Everything that touches the network runs elsewhere: the status watcher on its ``QThread``, pushes
in the :class:`~app.launcher.Launcher` pool, listings and metadata reads on pool threads.
"""
from __future__ import annotations

import html
import json
import logging
import os
import platform
import posixpath
from pathlib import Path

from PyQt5.QtCore import PYQT_VERSION_STR, QT_VERSION_STR, Qt, QTimer
from PyQt5.QtGui import QFontMetrics, QIcon, QKeySequence
from PyQt5.QtWidgets import (
    QAction,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStyle,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.launcher import ClusterAddress, Launcher
from app.live import AutoAnalysis, AutoAnalysisDialog, LivePanel, results_file
from app.watcher import StatusWatcher, start_watcher, stop_watcher
from rules import nameservice
from rules.activity import ActivityLog
from rules.chain import LOCALISATION, ChainStep, expected_outputs, from_factories, to_factories
from rules.dataserver_client import DataClient
from rules.errors import ClusterError
from rules.presets import PresetError, load_preset, save_preset
from rules.recipe_check import MODULE_SCHEMA_FILE, bundled_module_schema
from rules.recipe_params import params_from_json
from rules.simulation import SimulationSettings, spool_progress
from rules.uris import make_cluster_uri
from widgets.activity_view import ActivityView
from widgets.background import BackgroundCall, CallSignals, TaskPool
from widgets.chain_editor import ChainEditor
from widgets.chain_model import ChainModel
from widgets.cluster_files import ClusterFileDialog
from widgets.file_actions import REMOTE_REASON, copy_uri, show_in_folder
from widgets.import_dialog import DropImporter, ImportDialog, choose_import_path
from widgets.metadata_panel import MetadataPanel
from widgets.presets_menu import PresetsMenu, PresetStore
from widgets.progress_graph import ProgressGraph
from widgets.results_view import ResultOutput, ResultsView
from widgets.rule_table import RuleTableModel, RuleTableView
from widgets.series_browser import SeriesBrowser
from widgets.server_dialog import ServerDialog
from widgets.status_bar import ElidingStatusBar
from widgets.text_wrap import breakable

logger = logging.getLogger(__name__)

#: Widest the toolbar's series name gets (elided in the middle beyond it).
SERIES_LABEL_WIDTH = 300
#: Width the right pane (rule table, graph) is given first when the window is narrow.
RULES_PANE_WIDTH = 660
#: Height the rule table keeps when the live view opens (its header and three rows).
LIVE_RULES_HEIGHT = 150

LAST_CHAIN = "last_chain.yaml"
PRESETS_FOLDER = "chained_analysis"
ACTIVITY_FILE = "activity.jsonl"
WATCH_INTERVAL_S = 1.0


def _other_clusters(own: ClusterAddress) -> list[tuple[str, str, list[str]]]:
    """The clusters registered on this machine other than ``own`` (runs off the GUI thread)."""
    return [c for c in nameservice.local_clusters() if c[1].rstrip("/") != own.ruleserver]


def _server_features(address: ClusterAddress) -> tuple:
    """``(address, True)`` when the rule server is Spoolside's (has ``/spoolside/`` endpoints)."""
    from rules.ruleserver_client import RuleServerClient
    with RuleServerClient(address.ruleserver) as client:
        return address, client.extra_rule_info() is not None


def _module_schema(address: ClusterAddress) -> tuple:
    """``(address, {module: declarations})`` the cluster publishes in ``RECIPES/``, or
    ``(address, None)`` when it publishes none (a PYME cluster: the bundled list is used)."""
    with DataClient(list(address.dataservers), address.serverfilter or "") as client:
        try:
            text = client.get_file(f"RECIPES/{MODULE_SCHEMA_FILE}")
        except FileNotFoundError:
            return address, None
    return address, params_from_json(json.loads(text))


def default_steps() -> list[ChainStep]:
    """The bundled default chain: localise → render image → measure blobs."""
    from resources import resource_path
    try:
        return from_factories(load_preset(resource_path("presets", "default.yaml")))
    except PresetError as exc:
        logger.error("bundled default preset unusable: %s", exc)
        return [ChainStep.localisation()]


def _icon(name: str) -> QIcon:
    from resources import resource_path
    return QIcon(str(resource_path("icons", f"{name}.svg")))


class _CurrentDataClient:
    """A data client for whatever cluster the window is on when it is used (results loader)."""

    def __init__(self, window: "MainWindow"):
        self._window = window
        self._client: DataClient | None = None
        self._urls: tuple = ()

    def _current(self) -> DataClient:
        address = self._window.address
        if address is None:
            raise ClusterError("not connected to a cluster yet")
        if self._client is None or self._urls != address.dataservers:
            self.close()
            self._client = DataClient(list(address.dataservers), address.serverfilter or "")
            self._urls = address.dataservers
        return self._client

    def get_file(self, path: str) -> bytes:
        return self._current().get_file(path)

    def read_table(self, *args, **kwargs):
        return self._current().read_table(*args, **kwargs)

    def read_table_page(self, *args, **kwargs):
        return self._current().read_table_page(*args, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class MainWindow(QMainWindow):
    """The window. ``set_cluster(address)`` points it at a cluster (and may be called again).

    Parameters
    ----------
    settings
        the ``QSettings`` for geometry and the chosen server.
    config_dir
        per-user config folder: presets in ``chained_analysis/``, the last chain in ``last_chain.yaml``,
        the activity log in ``activity.jsonl``.
    """

    def __init__(self, settings, config_dir: str | Path, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.config_dir = Path(config_dir)
        self.address: ClusterAddress | None = None
        #: the window's own (embedded) cluster, once started
        self._embedded_address: ClusterAddress | None = None
        self.last_error = ""
        self._watcher: StatusWatcher | None = None
        self._watcher_thread = None
        self._retired: list = []  # (watcher, thread) of earlier clusters, ending on their own
        self._series = ""
        self._reachable: bool | None = None
        self._launch_outputs: dict[str, list[ResultOutput]] = {}
        self._launch_series: dict[str, str] = {}
        self._acquisitions: list = []
        self._simulator_available = False
        self._simulation_timer = QTimer(self)
        self._simulation_timer.setInterval(1000)
        self._simulation_timer.timeout.connect(self._show_simulation_status)
        #: False: close at once, without asking about running work (Ctrl-C, SIGTERM)
        self.ask_before_closing = True
        self._close_question: QMessageBox | None = None
        self._pool = TaskPool(2, name='main_window')
        self._signals = CallSignals(self)
        self._signals.done.connect(self._on_call_done)
        self._signals.failed.connect(self._on_call_failed)
        self.setWindowTitle("Spoolside")

        self.chain_model = ChainModel(parent=self)
        self.chain_editor = ChainEditor(self.chain_model)
        self.metadata_panel = MetadataPanel()
        self.rule_model = RuleTableModel(self)
        self.rule_view = RuleTableView(self.rule_model)
        self.progress_graph = ProgressGraph()
        self._data_proxy = _CurrentDataClient(self)
        self.results_view = ResultsView(lambda: self._data_proxy)
        self.series_browser = SeriesBrowser()
        self.live_panel = LivePanel()
        self.activity = ActivityLog(path=self.config_dir / ACTIVITY_FILE)  # earlier sessions too
        self.activity_view = ActivityView(self.activity)
        self.activity.on_add = self.activity_view.show_activity  # every add is on the GUI thread
        self.activity.add("session", f"Spoolside started (process {os.getpid()})")
        self._failures_shown: set[str] = set()  # rules whose failed tasks were brought forward
        self.auto_analysis = AutoAnalysis(settings, self)
        self.launcher = Launcher(self)
        self.presets = PresetsMenu(PresetStore(self.config_dir / PRESETS_FOLDER),
                                   lambda: self.chain_model.to_factories(), self)
        self._build_layout()
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self._restore()

    # -- construction ---------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.left_tabs = QTabWidget()
        self.left_tabs.addTab(self.series_browser, "Series")
        self.left_tabs.addTab(self.chain_editor, "Chain")
        self.left_tabs.addTab(self.metadata_panel, "Metadata")
        self.left_tabs.setCurrentWidget(self.chain_editor)
        left = self.left_tabs
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.progress_graph, "Progress")
        self.bottom_tabs.addTab(self.results_view, "Results")
        self.bottom_tabs.addTab(self.live_panel, "Live view")
        self.bottom_tabs.addTab(self.activity_view, "Activity")
        right = QSplitter(Qt.Vertical)
        right.addWidget(self._titled("Rules", self.rule_view))
        right.addWidget(self.bottom_tabs)
        # The table gets nearly half the height: all its counts and a chain's follow-ons fit.
        right.setStretchFactor(0, 9)
        right.setStretchFactor(1, 11)
        right.setSizes([450, 550])
        self.right_splitter = right
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setSizes([440, 840])
        for splitter in (right, self.splitter):
            splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(2)
        label = QLabel(f"<b>{title}</b>")
        layout.addWidget(label)
        layout.addWidget(widget, 1)
        return box

    def _build_actions(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_metadata_action = file_menu.addAction("Open &Metadata…",
                                                        self.metadata_panel._on_load_clicked)
        self.save_metadata_action = file_menu.addAction("Save M&etadata…",
                                                        self.metadata_panel._on_save_clicked)
        self.import_action = file_menu.addAction("&Import Data…",
                                                 lambda: self.import_data(choose_import_path(self)))
        self._drop_importer = DropImporter(self, self.import_data)
        self.open_cluster_action = file_menu.addAction("&Open from Cluster…", self.open_from_cluster)
        self.open_cluster_action.setShortcut(QKeySequence.Open)
        self.export_action = file_menu.addAction("E&xport Localisations…", self.export_localisations)
        file_menu.addSeparator()
        self.connect_action = file_menu.addAction("&Connect to Cluster…", self._on_connect_triggered)
        self.forget_action = file_menu.addAction("Use the &Embedded Cluster at Next Start",
                                                 self._on_forget_triggered)
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("&Quit", self.close)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setMenuRole(QAction.QuitRole)

        self.menuBar().addMenu(self.presets)

        analysis = self.menuBar().addMenu("&Analysis")
        self.add_localisation_action = analysis.addAction(
            "Add &Localisation Step", self.chain_editor.add_localisation_step)
        self.add_recipe_action = analysis.addAction("Add &Recipe Step",
                                                    lambda: self.chain_editor.add_recipe_step())
        analysis.addSeparator()
        self.launch_action = analysis.addAction("&Launch on Series", self.launch)
        self.launch_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.simulate_action = analysis.addAction("&Simulate Acquisition…",
                                                  self.series_browser._on_simulate_clicked)
        self.refresh_action = analysis.addAction("&Refresh Series", self.series_browser.refresh)
        self.auto_analysis_action = analysis.addAction("Analyse New Series &Automatically…",
                                                       self.edit_auto_analysis)
        self.refresh_action.setShortcut(QKeySequence.Refresh)
        analysis.addSeparator()
        analysis.addAction(self.rule_view.abort_action)
        analysis.addAction(self.rule_view.requeue_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = help_menu.addAction("&About Spoolside", self.show_about)
        self.about_action.setMenuRole(QAction.AboutRole)

        for action, icon in ((self.add_localisation_action, "localise"),
                             (self.add_recipe_action, "recipe"), (self.presets.save_action, "save"),
                             (self.launch_action, "launch"), (self.simulate_action, "simulate")):
            action.setIcon(_icon(icon))
        # The main actions come first and keep their text, so they never fall into the » overflow
        # (1024 px wide, any series name); editing actions are icons with tooltips (the chain
        # editor has the same buttons), the series name is elided.
        self.rule_view.abort_action.setIcon(self.style().standardIcon(QStyle.SP_BrowserStop))
        toolbar = QToolBar("Main")
        toolbar.setObjectName("main_toolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        toolbar.addAction(self.launch_action)
        launch_button = toolbar.widgetForAction(self.launch_action)
        launch_button.setStyleSheet("QToolButton { font-weight: bold; }")
        toolbar.addAction(self.simulate_action)
        toolbar.addAction(self.rule_view.abort_action)
        toolbar.addSeparator()
        self.series_label = QLabel()
        self.series_label.setContentsMargins(6, 0, 6, 0)
        self.series_label.setMaximumWidth(SERIES_LABEL_WIDTH)
        toolbar.addWidget(self.series_label)
        toolbar.addSeparator()
        for action in (self.add_localisation_action, self.add_recipe_action,
                       self.presets.save_action):
            toolbar.addAction(action)
            toolbar.widgetForAction(action).setToolButtonStyle(Qt.ToolButtonIconOnly)
        self.addToolBar(Qt.TopToolBarArea, toolbar)
        self.toolbar = toolbar

    def _build_status_bar(self) -> None:
        self.setStatusBar(ElidingStatusBar(self))  # long messages end in … before the label
        self.cluster_label = QLabel()
        self.cluster_label.setContentsMargins(16, 0, 4, 0)
        self.cluster_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.statusBar().addPermanentWidget(self.cluster_label)
        self._show_cluster_status("No cluster yet", None)

    def _connect(self) -> None:
        self.chain_editor.problemsChanged.connect(self._update_launch_enabled)
        self.chain_editor.currentStepChanged.connect(self._on_current_step_changed)
        self.chain_model.chainChanged.connect(self._sync_analysis_to_panel)
        self.metadata_panel.model.problemsChanged.connect(self._update_launch_enabled)
        self.metadata_panel.analysisEdited.connect(self._on_panel_analysis_edited)
        self.launcher.launched.connect(self._on_launched)
        self.auto_analysis.launched.connect(self._on_auto_launched)
        self.auto_analysis.stateChanged.connect(self._on_auto_analysis_state)
        self.launcher.launchFailed.connect(self._on_launch_failed)
        self.launcher.labelsChanged.connect(self.rule_model.set_rule_labels)
        self.rule_view.abortRequested.connect(self._on_abort_requested)
        self.rule_view.requeueRequested.connect(self._on_requeue_requested)
        self.rule_view.selectionChangedTo.connect(self._on_rules_selected)
        self.series_browser.seriesSelected.connect(self.set_series)
        self.series_browser.simulateRequested.connect(self.simulate)
        self.series_browser.openRequested.connect(self.open_cluster_file)
        self.series_browser.showInFolderRequested.connect(self.show_in_folder)
        self.series_browser.copyUriRequested.connect(
            lambda path: copy_uri(make_cluster_uri(path, (self.address.serverfilter or "")
                                                   if self.address else "")))
        self.results_view.showInFolderRequested.connect(self.show_in_folder)
        self.presets.presetLoaded.connect(self._on_preset_loaded)
        self.presets.message.connect(lambda text: self.statusBar().showMessage(text, 8000))

    def _restore(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.chain_model.set_steps(self._load_last_chain())
        self.set_series(str(self.settings.value("series/last", "") or ""))
        self._set_simulate_available()

    def _load_last_chain(self) -> list[ChainStep]:
        path = self.config_dir / LAST_CHAIN
        if path.is_file():
            try:
                return from_factories(load_preset(path))
            except PresetError as exc:
                logger.warning("last chain not restored: %s", exc)
                self.statusBar().showMessage(f"Last chain not restored: {exc}", 10000)
        return default_steps()

    def save_last_chain(self) -> None:
        try:
            if self.chain_model.rowCount():
                save_preset(self.config_dir / LAST_CHAIN, self.chain_model.to_factories())
        except (PresetError, OSError, ValueError) as exc:
            logger.warning("last chain not saved: %s", exc)

    # -- cluster --------------------------------------------------------------------------------
    def set_cluster(self, address: ClusterAddress) -> None:
        """Use ``address`` from now on: restart the watcher and the series listing.

        The previous watcher is told to stop but not waited for: it may be in the middle of a
        request to a cluster that does not answer, and the GUI thread never waits on the network.
        """
        self._retire_watcher()
        self.address = address
        if address.embedded and self._embedded_address is None:  # the window's start
            self._embedded_address = address
            self._pool.start(BackgroundCall("other clusters", lambda: _other_clusters(address),
                                            self._signals))
        self._reachable = None
        self._show_cluster_status(("Embedded cluster" if address.embedded else "Cluster")
                                  + f" {address.ruleserver}", None)
        watcher = StatusWatcher(address.ruleserver, WATCH_INTERVAL_S)
        watcher.statusesUpdated.connect(self._on_statuses_updated)
        watcher.reachabilityChanged.connect(self._on_reachability_changed)
        watcher.rulesLost.connect(self._on_rules_lost)
        self._watcher, self._watcher_thread = watcher, start_watcher(watcher)
        self.series_browser.set_source(
            lambda: DataClient(list(address.dataservers), address.serverfilter or ""))
        local = bool(address.embedded and address.root)
        self.series_browser.set_local_files(local, REMOTE_REASON)
        self.results_view.set_local_files(local, REMOTE_REASON)
        self.chain_editor.set_available_modules(None)
        self._pool.start(BackgroundCall("modules", lambda: _module_schema(address), self._signals))
        self.chain_editor.set_recipe_source(lambda: self._list_cluster_recipes(address),
                                            lambda uri: self._fetch_text(address, uri))
        self._set_simulate_available()
        self.rule_view.set_requeue_available("checking what the rule server can do…")
        self._pool.start(BackgroundCall("features", lambda: _server_features(address),
                                        self._signals))
        if self._series:
            self.set_series(self._series)  # a restored series: load its metadata from this cluster
        self._update_launch_enabled()
        self.auto_analysis.start(address)

    def show_cluster_error(self, message: str) -> None:
        """The cluster could not be started or reached at all."""
        self._show_cluster_status(f"No cluster: {message}", False)
        self._show_error("No cluster", message)

    def _show_cluster_status(self, text: str, reachable: bool | None) -> None:
        mark = {True: "● reachable", False: "● unreachable", None: "○ connecting…"}[reachable]
        colour = {True: "#1b7f3b", False: "#b3261e", None: "#777777"}[reachable]
        self.cluster_label.setText(f"{text}  <span style='color:{colour}'>{mark}</span>")
        self.cluster_label.setToolTip(self._cluster_description())

    def _cluster_description(self) -> str:
        if self.address is None:
            return "Not connected"
        return (f"Rule server: {self.address.ruleserver}\n"
                f"Data server(s): {', '.join(self.address.dataservers)}\n"
                f"Cluster name: {self.address.serverfilter or '(any)'}")

    @staticmethod
    def _list_cluster_recipes(address: ClusterAddress) -> list[str]:
        with DataClient(list(address.dataservers), address.serverfilter or "") as client:
            names = client.listdir("RECIPES")
        return [make_cluster_uri(f"RECIPES/{n}", address.serverfilter or "")
                for n in names if n.endswith((".yaml", ".yml"))]

    @staticmethod
    def _fetch_text(address: ClusterAddress, uri: str) -> str:
        with DataClient(list(address.dataservers), address.serverfilter or "") as client:
            return client.get_file(uri).decode("utf-8", "replace")

    def _retire_watcher(self) -> None:
        watcher, thread = self._watcher, self._watcher_thread
        if watcher is None:
            return
        self._watcher = self._watcher_thread = None
        for signal in (watcher.statusesUpdated, watcher.reachabilityChanged, watcher.rulesLost):
            signal.disconnect()
        watcher.stop()
        thread.quit()
        self._retired = [(w, t) for w, t in self._retired if not t.isFinished()]
        self._retired.append((watcher, thread))

    def _stop_watcher(self) -> None:
        for watcher, thread in list(self._retired):
            if not stop_watcher(watcher, thread):
                logger.warning("an earlier status watcher did not stop in time")
        self._retired = []
        if self._watcher is not None:
            if not stop_watcher(self._watcher, self._watcher_thread):
                logger.warning("status watcher did not stop in time")
            self._watcher = self._watcher_thread = None

    def _on_reachability_changed(self, reachable: bool, message: str) -> None:
        where = self.address.ruleserver if self.address else ""
        if not reachable:
            self.activity.add("cluster", f"Cluster {where} unreachable: {message}")
        elif self._reachable is False:
            self.activity.add("cluster", f"Cluster {where} reachable again")
        elif self._reachable is None:
            self.activity.add("cluster", f"Connected to {where}")
        self._reachable = reachable
        self.rule_view.set_reachable(reachable, message)
        name = "Embedded cluster" if self.address and self.address.embedded else "Cluster"
        where = self.address.ruleserver if self.address else ""
        self._show_cluster_status(f"{name} {where}", reachable)
        if reachable and self.statusBar().currentMessage().startswith("Starting the embedded"):
            self.statusBar().clearMessage()
        if not reachable:
            self.statusBar().showMessage(f"Cluster {where} unreachable: {message}", 10000)
        self._update_launch_enabled()

    def _on_rules_lost(self, rule_ids: list) -> None:
        shown = ", ".join(f"{rule_id[:6]}…" for rule_id in rule_ids[:5])
        self.statusBar().showMessage(f"Cluster restarted — rules lost ({len(rule_ids)}: {shown})")
        self.activity.add("cluster", f"Cluster restarted — rules lost ({len(rule_ids)}: {shown})")

    def _on_statuses_updated(self, statuses: list) -> None:
        self.rule_model.set_statuses(statuses)
        self.progress_graph.add_statuses(statuses)
        self.rule_model.set_live(self._live_rules())
        self._note_failures(statuses)

    def _note_failures(self, statuses: list) -> None:
        """The first failed task of a rule goes in the activity log; for this window's own
        launches its log is also brought to the front (Results tab)."""
        mine = {rule.rule_id for rule in self.launcher.rules}
        for status in statuses:
            if not status.failed or status.rule_id in self._failures_shown:
                continue
            self._failures_shown.add(status.rule_id)
            name = self.rule_model.legend_name(status.rule_id)
            named = f"{status.rule_id} ({name})" if name != status.rule_id[:len(name)] \
                else status.rule_id
            self.activity.add("failure", f"Rule {named}: {status.failed} task(s) failed "
                                         f"(log: LOGS/rules/{status.rule_id}.log)")
            if self.rule_model.root_of(status.rule_id) in mine:
                self.results_view.show_error_log(status.rule_id)
                self.bottom_tabs.setCurrentWidget(self.results_view)

    def _live_rules(self) -> dict:
        """Rules still released as their series spools → the tasks expected (None if unknown)."""
        live = {}
        for rule in self.launcher.rules:
            if rule.rule_id and rule.releasing:
                target = getattr(getattr(rule, "spooler", None), "n_target", None)
                start = int(getattr(rule, "startAt", 0) or 0)
                live[rule.rule_id] = max(0, target - start) if isinstance(target, int) else None
        return live

    # -- series and metadata --------------------------------------------------------------------
    def import_data(self, path: str) -> ImportDialog | None:
        """Import a local TIFF stack or .pcs folder as a series (File ▸ Import Data…, or a drop)."""
        if not path or self.address is None:
            return None
        address = self.address
        dialog = ImportDialog(path, lambda: DataClient(list(address.dataservers),
                                                       address.serverfilter or ""), self)
        dialog.imported.connect(lambda series: (
            self.series_browser.refresh(), self.set_series(series),
            self.statusBar().showMessage(f"Imported {series} (from {Path(path).name})", 10000)))
        dialog.open()
        return dialog

    def set_series(self, path: str) -> None:
        """Make ``path`` (cluster path or URI) the series launches and previews use."""
        self._series = path
        self.settings.setValue("series/last", path)
        self.series_browser.follow_series(path)
        self.chain_editor.set_series(self.series_uri() or None)
        name = posixpath.basename(path) or "(none: pick one in the Series tab)"
        bold = self.series_label.font()
        bold.setBold(True)
        metrics = QFontMetrics(bold)
        name = metrics.elidedText(name, Qt.ElideMiddle,
                                  SERIES_LABEL_WIDTH - metrics.horizontalAdvance("Series: ") - 16)
        self.series_label.setText(f"Series: <b>{html.escape(name)}</b>")
        self.series_label.setToolTip(self.series_uri() or "Pick a series in the Series panel")
        if path and self.address is not None:
            address = self.address
            self.metadata_panel.load_async(lambda: self._read_series_metadata(address, path),
                                           posixpath.basename(path))
        self._update_launch_enabled()

    def series_uri(self) -> str:
        if not self._series:
            return ""
        serverfilter = self.address.serverfilter if self.address else ""
        return make_cluster_uri(self._series, serverfilter or "")

    @staticmethod
    def _read_series_metadata(address: ClusterAddress, path: str) -> dict:
        with DataClient(list(address.dataservers), address.serverfilter or "") as client:
            data = json.loads(client.get_file(f"{path.rstrip('/')}/metadata.json"))
        if not isinstance(data, dict):
            raise ValueError("metadata.json does not hold a JSON object")
        return data

    def _on_current_step_changed(self, row: int) -> None:
        if row >= 0 and self.chain_model.step(row).kind == LOCALISATION:
            self.metadata_panel.set_analysis(self.chain_model.step(row).analysis)

    def _localisation_row(self) -> int:
        row = self.chain_editor.current_row()
        if row >= 0 and self.chain_model.step(row).kind == LOCALISATION:
            return row
        return next((i for i, s in enumerate(self.chain_model.steps) if s.kind == LOCALISATION), -1)

    def _sync_analysis_to_panel(self) -> None:
        row = self._localisation_row()
        if row >= 0:
            analysis = self.chain_model.step(row).analysis
            shown = self.metadata_panel.model.metadata()
            if any(shown.get(k) != v for k, v in analysis.items()):
                self.metadata_panel.set_analysis(analysis)

    def _on_panel_analysis_edited(self, analysis: dict) -> None:
        row = self._localisation_row()
        if row >= 0:
            merged = {**self.chain_model.step(row).analysis, **analysis}
            self.chain_model.update_step(row, analysis=merged)
            if row == self.chain_editor.current_row():
                self.chain_editor.localisation_editor.set_analysis(merged)

    # -- launching ------------------------------------------------------------------------------
    def launch_blockers(self) -> list[str]:
        """Why Launch is not possible now (empty when it is)."""
        blockers = []
        if self.address is None:
            blockers.append("no cluster yet")
        if not self._series:
            blockers.append("pick a series")
        if not self.chain_model.rowCount():
            blockers.append("the chain is empty")
        problems = self.chain_editor.problems()
        if problems:
            blockers.append(f"{len(problems)} problem(s) in the chain")
        bad = self.metadata_panel.model.problems()
        if bad:
            blockers.append("invalid metadata: " + ", ".join(k for k, _ in bad))
        if self.launcher.busy:
            blockers.append("a launch is in progress")
        return blockers

    def _update_launch_enabled(self, *_args) -> None:
        blockers = self.launch_blockers()
        self.launch_action.setEnabled(not blockers)
        self.launch_action.setToolTip("Launch the chain on the series (Ctrl+Return)" if not blockers
                                      else "Cannot launch: " + "; ".join(blockers))

    def launch_steps(self) -> list[ChainStep]:
        """The chain as it will be sent: edited series metadata goes into localisation steps."""
        overrides = {k: v for k, v in self.metadata_panel.model.edited().items()
                     if not k.startswith("Analysis.")}
        steps = self.chain_model.steps
        for step in steps:
            if step.kind == LOCALISATION:
                step.analysis = {**overrides, **step.analysis}
        return steps

    def launch(self, *, series: str | None = None, steps: list[ChainStep] | None = None,
               spooler=None) -> int | None:
        """Push the chain for the current series in the background; None if it cannot start."""
        if series is None:
            self.chain_editor.validate_now()
            blockers = self.launch_blockers()
            if blockers:
                self._show_error("Cannot launch", "Cannot launch: " + "; ".join(blockers) + ".")
                return None
        series_uri = make_cluster_uri(series, self.address.serverfilter or "") if series \
            else self.series_uri()
        steps = steps if steps is not None else self.launch_steps()
        try:
            factories = to_factories(steps)
        except (ValueError, TypeError) as exc:
            self._show_error("Cannot launch", f"The chain is not valid: {exc}")
            return None
        # The table's Step column is narrow: "render image" says enough without "Recipe: ".
        names = [s.title().removeprefix("Recipe: ") for s in steps]
        number = self.launcher.launch(factories, series_uri, names,
                                      self.address, spooler)
        self._launch_outputs[str(number)] = self._expected_outputs(steps, series_uri)
        self._launch_series[str(number)] = series_uri
        self.statusBar().showMessage(f"Launching #{number} on {posixpath.basename(series_uri)}…")
        self._update_launch_enabled()
        self.save_last_chain()
        return number

    def _expected_outputs(self, steps: list[ChainStep], series_uri: str) -> list[ResultOutput]:
        serverfilter = (self.address.serverfilter or "") if self.address else ""
        texts = {s.recipe_uri: self.chain_editor.recipe_text(s.recipe_uri) or ""
                 for s in steps if s.recipe_uri}
        return [ResultOutput(name, uri)
                for name, uri in expected_outputs(steps, series_uri, serverfilter, texts)]

    def _on_launched(self, launch: str, rule_id: str) -> None:
        number = launch.split()[0].lstrip("#")
        previewed = self._launch_outputs.pop(number, [])
        # what the chain really writes (the ``_N`` names it got), else the preview
        outputs = [ResultOutput(name, uri) for name, uri in self.launcher.outputs(rule_id)] \
            or previewed
        self._launch_outputs[rule_id] = outputs
        self.results_view.set_outputs(outputs)
        series_uri = self._launch_series.pop(number, None)
        self._follow_live(outputs, series_uri, rule_id)
        self.statusBar().showMessage(f"Launched {launch}: rule {rule_id}", 10000)
        self.activity.add("launch", f"Launched {launch} on {series_uri or 'the series'}: "
                                    f"rule {rule_id}")
        self._update_launch_enabled()
        if self._watcher is not None:
            self._watcher.poll_now()

    def _follow_live(self, outputs: list[ResultOutput], series_uri: str | None, rule_id: str) -> None:
        """A chain that starts with a localisation (its first output an ``.h5r``): show it live."""
        results = results_file([o.uri for o in outputs[:1]])
        if results is None or self.address is None:
            return
        self.live_panel.follow(self.address.dataservers, self.address.serverfilter or "", results,
                               series_uri, self.address.ruleserver, rule_id)
        self.bottom_tabs.setCurrentWidget(self.live_panel)
        self._give_room_to_live_view()

    def _give_room_to_live_view(self) -> None:
        """The live view gets most of the right pane's height: the rule table keeps its header
        and a chain's three rows."""
        table, tabs = self.right_splitter.sizes()
        keep = max(LIVE_RULES_HEIGHT, int((table + tabs) * 0.22))
        if table > keep:
            self.right_splitter.setSizes([keep, tabs + table - keep])

    def open_cluster_file(self, path: str) -> None:
        """Show a file of the cluster (an ``.h5r``, ``.tif``, ``.csv``, ...) in the Results tab."""
        serverfilter = (self.address.serverfilter or "") if self.address else ""
        self.results_view.preview(make_cluster_uri(path, serverfilter))
        self.bottom_tabs.setCurrentWidget(self.results_view)

    def open_from_cluster(self) -> ClusterFileDialog | None:
        """File ▸ Open from Cluster…: browse the cluster's files, open one in the Results tab."""
        address = self.address
        if address is None:
            self._show_error("Open from cluster", "Not connected to a cluster yet.")
            return None
        dialog = ClusterFileDialog(
            lambda: DataClient(list(address.dataservers), address.serverfilter or ""), self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.fileChosen.connect(self.open_cluster_file)
        dialog.open()
        return dialog

    def show_in_folder(self, path: str) -> None:
        """*Show in Folder* for a file or series of the embedded cluster."""
        root = self.address.root if self.address is not None and self.address.embedded else None
        problem = show_in_folder(root, path)
        if problem:
            self.statusBar().showMessage(f"Cannot show {path} in its folder: {problem}", 10000)

    def export_localisations(self) -> None:
        """File ▸ Export Localisations… of the results file in the Live view tab."""
        if self.live_panel.results_uri is None:
            self._show_error("Export localisations", "Launch a chain with a localisation step first: "
                             "its results file is exported from the Live view tab.")
            return
        self.live_panel.export()

    def edit_auto_analysis(self) -> None:
        """Analysis ▸ Analyse New Series Automatically…"""
        dialog = AutoAnalysisDialog(self.auto_analysis, self.config_dir / PRESETS_FOLDER, self)
        if dialog.exec_():
            self.auto_analysis.start(self.address)

    def _on_auto_launched(self, text: str) -> None:
        self.statusBar().showMessage(text, 15000)
        self.activity.add("auto-launch", text)
        if self._watcher is not None:
            self._watcher.poll_now()

    def _on_auto_analysis_state(self, text: str) -> None:
        self.statusBar().showMessage(text, 10000)
        if text:
            self.activity.add("auto-launch", text)

    def on_workers_restarted(self, restarted: int, total: int) -> None:
        """The embedded cluster replaced ``restarted`` worker processes that had exited."""
        self.activity.add("workers", f"{restarted} worker process(es) exited and were replaced "
                                     f"({total} since the cluster started)")

    def _on_launch_failed(self, message: str) -> None:
        self.activity.add("failure", f"Launch failed: {message}")
        self._update_launch_enabled()
        self._show_error("Launch failed", message)

    def _show_error(self, title: str, message: str) -> None:
        """A non-modal message (the window keeps working) plus the status bar."""
        self.last_error = message
        self.statusBar().showMessage(message, 15000)
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.setWindowModality(Qt.NonModal)
        box.open()
        self.error_box = box

    # -- rules and results ----------------------------------------------------------------------
    def _on_rules_selected(self, rule_ids: list) -> None:
        self.progress_graph.set_rules(list(rule_ids), {r: self.rule_model.legend_name(r)
                                                       for r in rule_ids})
        if len(rule_ids) != 1:
            return
        rule_id = rule_ids[0]
        outputs = self._launch_outputs.get(self.rule_model.root_of(rule_id))
        if outputs is not None:
            self.results_view.set_outputs(outputs)
        status = self.rule_model.status(rule_id)
        if status is not None and getattr(status, "failed", 0):
            self.results_view.show_error_log(rule_id)
            self.bottom_tabs.setCurrentWidget(self.results_view)  # where the log now is

    def _on_abort_requested(self, rule_id: str) -> None:
        address = self.address
        if address is None:
            return

        # the release loop pushing this rule's new frames stops too, so its counts stay put
        local = [r for r in self.launcher.rules if r.rule_id == rule_id]

        def abort() -> str:
            from rules.ruleserver_client import RuleServerClient
            for rule in local:
                rule.cleanup()
            with RuleServerClient(address.ruleserver) as client:
                client.inactivate_rule(rule_id)
            return rule_id
        self._pool.start(BackgroundCall("abort", abort, self._signals))

    def _on_requeue_requested(self, rule_id: str) -> None:
        address = self.address
        if address is None:
            return

        def requeue() -> tuple:
            from rules.ruleserver_client import RuleServerClient
            with RuleServerClient(address.ruleserver) as client:
                return rule_id, client.requeue_failed(rule_id)
        self._pool.start(BackgroundCall("requeue", requeue, self._signals))

    # -- simulation -----------------------------------------------------------------------------
    def _set_simulate_available(self) -> None:
        try:
            import cluster.spool_process  # noqa: F401 - only checking it is installed
        except ImportError:
            available, tip = False, "The simulator is not installed"
        else:
            if self.address is None or not self.address.embedded:
                available, tip = False, "Available on the embedded cluster only"
            else:
                available, tip = True, "Spool a simulated series and launch the chain on it live"
        self._simulator_available = available
        self.series_browser.set_simulate_available(available, tip)
        self.simulate_action.setEnabled(available)
        self.simulate_action.setToolTip(tip)

    def simulate(self, name: str, settings: SimulationSettings) -> None:
        """Start a simulated acquisition on the embedded cluster, then launch the chain on it live
        (its frames are made and sent by a child process: nothing in this one slows it)."""
        if not self._simulator_available:
            return
        address = self.address

        def start():
            from cluster.spool_process import SpoolingProcess
            return SpoolingProcess(list(address.dataservers), name, settings,
                                   serverfilter=address.serverfilter or "").start()
        self.statusBar().showMessage(f"Starting simulated acquisition {name}…")
        self._pool.start(BackgroundCall("simulate", start, self._signals))

    def _on_call_done(self, what: str, result) -> None:
        if what == "simulate":
            acquisition = result
            self._acquisitions.append(acquisition)
            self.activity.add("acquisition", f"Simulated acquisition {acquisition.series_path} "
                                             "started")
            self._show_simulation_status()
            self._simulation_timer.start()
            steps = self.launch_steps()
            self.set_series(acquisition.series_path)
            self.chain_editor.validate_now()
            blockers = self.launch_blockers()
            if blockers:
                self._show_error("Not launched", f"{acquisition.series_path} is spooling, but the "
                                 "chain was not launched: " + "; ".join(blockers) + ".")
            else:
                self.launch(series=acquisition.series_path, steps=steps,
                            spooler=acquisition)
            self.series_browser.refresh()
        elif what == "other clusters":
            self._tell_other_clusters(result)
        elif what == "modules":
            address, modules = result
            if address == self.address:  # none published (PYME's): check with the bundled list
                self.chain_editor.set_available_modules(
                    modules if modules is not None else bundled_module_schema(),
                    bundled=modules is None)
        elif what == "features":
            address, spoolside = result
            if address == self.address:
                self.rule_view.set_requeue_available(
                    None if spoolside else "this rule server (PYME) cannot re-run failed tasks; "
                                           "launch the chain again")
        elif what == "requeue":
            rule_id, n = result
            self._failures_shown.discard(rule_id)  # a failure of the re-run is news again
            self.statusBar().showMessage(
                f"{n} failed task(s) of rule {rule_id[:11]} queued again" if n is not None
                else "This rule server cannot re-run failed tasks", 8000)
            if self._watcher is not None:
                self._watcher.poll_now()
        elif what == "abort":
            self.statusBar().showMessage(f"Rule {str(result)[:6]}… aborted", 8000)
            self.activity.add("abort", f"Rule {result} aborted")

    def _show_simulation_status(self) -> None:
        """The newest simulated acquisition's frames and real spool rate, under the series."""
        if not self._acquisitions:
            self._simulation_timer.stop()
            self.series_browser.set_simulation_status("")
            return
        a = self._acquisitions[-1]
        if a.finished():
            self._simulation_timer.stop()
        self.series_browser.set_simulation_status(spool_progress(  # a long name wraps in the pane
            breakable(a.series_path), a.get_n_frames(), a.n_target, a.spool_rate(), a.fps,
            a.finished()))

    def _on_call_failed(self, what: str, message: str) -> None:
        if what == "modules":
            logger.info("no module declarations from the cluster: %s", message)
            return
        if what == "features":
            self.rule_view.set_requeue_available(f"the rule server did not answer ({message})")
            return
        title = {"simulate": "Simulation failed", "abort": "Abort failed",
                 "requeue": "Re-run failed"}.get(what, what)
        self.activity.add("failure", f"{title}: {message}")
        self._show_error(title, f"{title}: {message}")

    def _on_preset_loaded(self, name: str, factories: list) -> None:
        self.chain_model.set_factories(factories)
        self.setWindowTitle(f"Spoolside — {name}")

    def _on_connect_triggered(self) -> None:
        own = self._embedded_address
        dialog = ServerDialog(self.address.ruleserver if self.address else "http://",
                              self.address.dataservers if self.address else (), self,
                              clusters=None, own_ruleserver=own.ruleserver if own is not None else "")
        # the name service's rows are checked with a connect each (a stale one waits for its
        # timeout): off the GUI thread, listed when done
        signals = CallSignals(dialog)
        signals.done.connect(lambda _tag, clusters: dialog.set_clusters(clusters))
        signals.failed.connect(lambda _tag, message: dialog.set_clusters([]))
        self._pool.start(BackgroundCall("local clusters", nameservice.local_clusters, signals))
        if dialog.exec_() != ServerDialog.Accepted:
            return
        rule, data = dialog.values()
        if own is not None and (rule.rstrip("/"), tuple(u.rstrip("/") for u in data)) == \
                (own.ruleserver, own.dataservers):
            self._on_forget_triggered()  # the window's own cluster: the default, nothing to save
            if self.address != own:
                self.set_cluster(own)
            return
        address = ClusterAddress(rule, data, dialog.serverfilter())
        self.settings.setValue("cluster/ruleserver", address.ruleserver)
        self.settings.setValue("cluster/dataservers", ",".join(address.dataservers))
        if address.serverfilter:
            self.settings.setValue("cluster/serverfilter", address.serverfilter)
        else:
            self.settings.remove("cluster/serverfilter")
        self.set_cluster(address)

    def _tell_other_clusters(self, others: list) -> None:
        """Other clusters run on this machine while the window started its own: say so, without
        asking (the user may have meant one of them)."""
        if not others:
            return
        names = ", ".join(f"{name or '(no name)'} at {rule}" for name, rule, _ in others)
        several = len(others) > 1  # the advice first: a narrow status bar cuts the end off
        text = (f"{len(others)} other cluster{'s run' if several else ' runs'} on this machine — "
                f"File ▸ Connect to Cluster… to use {'one' if several else 'it'} ({names})")
        self.statusBar().showMessage(text, 30000)
        self.activity.add("cluster", text)

    def _on_forget_triggered(self) -> None:
        self.settings.remove("cluster/ruleserver")
        self.settings.remove("cluster/dataservers")
        self.settings.remove("cluster/serverfilter")
        self.statusBar().showMessage("The next start uses the embedded cluster "
                                     "(unless --server or PYME_RULESERVER_URL says otherwise)", 10000)

    # -- about and shutdown ---------------------------------------------------------------------
    def about_text(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        import numpy
        import pyqtgraph

        try:
            ours = version("spoolside")
        except PackageNotFoundError:
            ours = "(not installed)"
        lines = [f"<b>Spoolside</b> {ours}",
                 "Set up, launch and watch analysis chains on PYME\u2011compatible clusters.", "",
                 f"Python {platform.python_version()} · Qt {QT_VERSION_STR} · PyQt {PYQT_VERSION_STR}",
                 f"pyqtgraph {pyqtgraph.__version__} · numpy {numpy.__version__}", ""]
        lines += self._cluster_description().split("\n")
        if self.address is not None:
            lines.append("Embedded cluster of one" if self.address.embedded else "External cluster")
        # Non-breaking spaces: QMessageBox wraps its text at a narrow width of its own choosing.
        return "<br>".join(line.replace(" ", "&nbsp;") for line in lines)

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.Information, "About Spoolside", self.about_text(),
                          QMessageBox.Ok, self)
        box.setTextFormat(Qt.RichText)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()

    def shutdown(self) -> None:
        """Stop every thread the window started (idempotent)."""
        self._stop_watcher()
        self.series_browser.stop()
        self.results_view.stop()
        self.auto_analysis.stop()
        self.live_panel.close_clients()
        self.launcher.shutdown()
        self._simulation_timer.stop()
        for acquisition in self._acquisitions:
            acquisition.stop()
            acquisition.wait(5)
            acquisition.close()
        self._acquisitions = []
        self.chain_editor.stop()
        self.metadata_panel.stop()
        self._pool.waitForDone(10000)
        self._data_proxy.close()

    def running_work(self) -> list[str]:
        """What this window started that still runs: its simulated acquisitions that are spooling
        and the unfinished rules of its own launches (asked about before closing)."""
        work = [f"acquisition of {a.series_path} ({a.get_n_frames()} frames so far)"
                for a in self._acquisitions if not a.finished()]
        mine = {rule.rule_id for rule in self.launcher.rules}
        running = [r for r in self.rule_model.rule_ids()
                   if self.rule_model.root_of(r) in mine and not self.rule_model.is_gone(r)
                   and not self.rule_model.status(r).terminal]
        if running:
            work.append(f"analysis ({len(running)} rule{'s' if len(running) != 1 else ''} "
                        "not finished)")
        elif self.launcher.busy or any(rule.releasing for rule in self.launcher.rules):
            work.append("analysis (being launched)")
        return work

    def _ask_to_close(self, work: list[str]) -> None:
        """Ask (without blocking) whether to close anyway; "Close" closes the window."""
        if self._close_question is not None:
            self._close_question.raise_()
            return
        box = QMessageBox(QMessageBox.Question, "Close Spoolside?",
                          "Still running: " + "; ".join(work) + ".\n\nClosing stops them; the "
                          "series and results keep what was written so far.",
                          QMessageBox.Close | QMessageBox.Cancel, self)
        box.setDefaultButton(QMessageBox.Cancel)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.finished.connect(self._on_close_answered)
        self._close_question = box
        box.open()

    def _on_close_answered(self, answer: int) -> None:
        self._close_question = None
        if answer == QMessageBox.Close:
            self.ask_before_closing = False
            self.close()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Narrow windows take the room from the left pane first, down to what it needs, so the
        rule table keeps its count columns."""
        super().resizeEvent(event)
        left, right = self.splitter.sizes()
        wanted = RULES_PANE_WIDTH - right
        if wanted > 0:
            spare = left - self.left_tabs.minimumSizeHint().width()
            move = min(wanted, max(0, spare))
            if move:
                self.splitter.setSizes([left - move, right + move])

    def closeEvent(self, event) -> None:
        work = self.running_work() if self.ask_before_closing else []
        if work:
            event.ignore()
            self._ask_to_close(work)
            return
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.save_last_chain()
        self.shutdown()
        super().closeEvent(event)

