"""The main window against real servers: launch in the background, unreachable clusters, settings."""
from __future__ import annotations

import json
import socket
import time
from types import SimpleNamespace

import pytest
from PyQt5.QtCore import QCoreApplication, QEvent, QSettings, QThread, QTimer

from app.cli import parse_args
from app.gui import ClusterChoiceError, EmbeddedCluster, choose_cluster
from app.launcher import ClusterAddress
from app.main_window import LAST_CHAIN, MainWindow
from rules.chain import LOCALISATION
from rules.simulation import SimulationSettings

SERIES = "pyme/series.pcs"


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)


@pytest.fixture
def make_window(qtbot, tmp_path, settings):
    windows = []

    def make() -> MainWindow:
        window = MainWindow(settings, tmp_path / "config")
        qtbot.addWidget(window)
        windows.append(window)
        return window
    yield make
    for window in windows:
        window.ask_before_closing = False
        window.close()      # closeEvent stops the watcher, pools and loader threads
        window.shutdown()
        assert window._watcher is None
        # Delete now, not whenever the garbage collector gets to it during a later test.
        window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_launch_pushes_in_the_background_and_the_rule_appears(qtbot, make_window, rule_server,
                                                              data_server, fixture_series_root):
    window = make_window()
    window.show()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
    assert "reachable" in window.cluster_label.text() and rule_server.url in window.cluster_label.text()

    # The series browser lists the series (off the GUI thread); picking it loads its metadata.
    qtbot.waitUntil(lambda: any(e.path == SERIES for e in window.series_browser.entries()),
                    timeout=10000)
    entry = next(e for e in window.series_browser.entries() if e.path == SERIES)
    assert entry.is_series and entry.complete
    assert window.series_browser.select_series(SERIES)
    assert window.series_uri() == "PYME-CLUSTER://testcluster/pyme/series.pcs"
    qtbot.waitUntil(lambda: "Camera.ADOffset" in window.metadata_panel.model.metadata(),
                    timeout=10000)

    window.chain_editor.validate_now()
    qtbot.waitUntil(lambda: window.launch_action.isEnabled(), timeout=5000)
    steps_before = window.chain_model.steps
    with qtbot.waitSignal(window.launcher.launched, timeout=20000) as blocker:
        window.launch_action.trigger()
    _, rule_id = blocker.args
    qtbot.waitUntil(lambda: rule_id in window.rule_model.rule_ids(), timeout=10000)
    label = window.launcher.labels[rule_id]
    assert label.series == "series.pcs" and label.step.startswith("Localise")
    assert label.followon_steps == ("render and measure blobs",)
    assert window.chain_model.steps == steps_before
    outputs = [o.uri for o in window.results_view._outputs]
    assert outputs[0] == "PYME-CLUSTER://testcluster/pyme/analysis/series.h5r?table=FitResults"
    assert outputs[1:] == ["PYME-CLUSTER://testcluster/pyme/analysis/series.tif",
                           "PYME-CLUSTER://testcluster/pyme/analysis/series_blobs.csv"]
    assert rule_server.url in window.about_text() and data_server.url in window.about_text()
    assert window.presets.save_action.shortcut().toString() == "Ctrl+S"
    assert window.launch_action.shortcut().toString() == "Ctrl+Return"
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"


def test_problems_disable_launch(qtbot, make_window, rule_server, data_server):
    window = make_window()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    window.set_series(SERIES)
    window.chain_editor.validate_now()
    assert window.launch_action.isEnabled()
    window.chain_editor.select_row(1)
    render = window.chain_model.step(1).recipe
    window.chain_editor.recipe_editor.yaml_edit.setPlainText("- a: [\n")
    qtbot.waitUntil(lambda: not window.launch_action.isEnabled(), timeout=3000)
    assert "problem(s) in the chain" in window.launch_action.toolTip()
    assert window.launch() is None
    assert "problem(s) in the chain" in window.last_error

    window.chain_editor.recipe_editor.yaml_edit.setPlainText(render)
    qtbot.waitUntil(lambda: window.launch_action.isEnabled(), timeout=3000)
    window.metadata_panel.model.update_values({"voxelsize.x": 0.1})
    window.metadata_panel.model.set_text("voxelsize.x", "-1")
    assert not window.launch_action.isEnabled()
    assert "voxelsize.x" in window.launch_action.toolTip()


def test_unreachable_cluster_gives_a_message_not_a_freeze(qtbot, make_window):
    window = make_window()
    window.show()
    dead = f"http://127.0.0.1:{_free_port()}"
    window.set_cluster(ClusterAddress(dead, (dead,), "nowhere"))
    window.set_series(SERIES)
    steps_before = window.chain_model.steps
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    try:
        with qtbot.waitSignal(window.launcher.launchFailed, timeout=30000) as blocker:
            assert window.launch(series=SERIES) is not None
        qtbot.waitUntil(lambda: window._reachable is False, timeout=15000)
    finally:
        timer.stop()
    assert "did not answer" in blocker.args[0] and "Traceback" not in blocker.args[0]
    assert window.last_error == blocker.args[0]
    assert window.error_box.isVisible()
    assert "unreachable" in window.cluster_label.text()
    assert not window.rule_view.banner.isHidden()
    # A few words, not urllib3's nested repr.
    assert "connection refused" in window.rule_view.banner.text()
    assert "HTTPConnectionPool" not in window.rule_view.banner.text()
    assert window.chain_model.steps == steps_before
    # The GUI thread kept running while the push failed: no gap anywhere near a request timeout.
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 5 and max(gaps) < 2.0


def test_settings_and_last_chain_survive_a_restart(qtbot, make_window, tmp_path, settings):
    window = make_window()
    window.resize(1000, 700)
    window.chain_editor.select_row(0)
    window.chain_editor.localisation_editor.threshold.setValue(3.0)
    window.chain_model.remove_step(2)
    window.close()
    assert (tmp_path / "config" / LAST_CHAIN).is_file()
    assert settings.value("window/geometry") is not None

    again = make_window()
    steps = again.chain_model.steps
    assert len(steps) == 2 and steps[0].kind == LOCALISATION
    assert steps[0].analysis["Analysis.DetectionThreshold"] == 3.0
    assert again.size().width() == 1000


def test_choose_cluster_order(settings):
    args = SimpleNamespace(server=None, dataserver=None)
    assert choose_cluster(args, settings, {}) is None
    env = {"PYME_RULESERVER_URL": "http://h:1/", "PYME_DATASERVER_URL": "http://h:2,http://h:3"}
    assert choose_cluster(args, settings, env) == ClusterAddress("http://h:1", ("http://h:2", "http://h:3"))
    settings.setValue("cluster/ruleserver", "http://saved:1")
    settings.setValue("cluster/dataservers", "http://saved:2")
    assert choose_cluster(args, settings, env).ruleserver == "http://saved:1"
    settings.setValue("cluster/serverfilter", "bench-b")  # picked from this machine's clusters
    assert choose_cluster(args, settings, env).serverfilter == "bench-b"
    given = parse_args(["--server", "http://given:1", "--dataserver", "http://given:2"])
    assert choose_cluster(given, settings, env) == ClusterAddress("http://given:1", ("http://given:2",))
    with pytest.raises(ClusterChoiceError):
        choose_cluster(SimpleNamespace(server="http://given:1", dataserver=None), settings, {})


def test_embedded_cluster_starts_off_the_gui_thread_and_stops(qtbot, make_window, tmp_path):
    embedded = EmbeddedCluster(tmp_path / "data", workers=0)
    window = make_window()
    embedded.started.connect(window.set_cluster)
    try:
        with qtbot.waitSignal(embedded.started, timeout=20000) as blocker:
            embedded.start()
        address = blocker.args[0]
        assert address.embedded and window.address == address
        qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
        assert window.simulate_action.isEnabled() == window._simulator_available
    finally:
        window.close()
        embedded.stop()
    assert embedded.cluster is None
    assert QThread.currentThread() is window.thread()


def test_simulated_acquisition_runs_the_default_chain_to_the_end(qtbot, make_window, tmp_path):
    """Embedded cluster with a worker: simulate 100 frames, launch live, every rule finishes."""
    from cluster.local import start_local_cluster
    cluster = start_local_cluster(tmp_path / "data", workers=1)
    try:
        window = make_window()
        window.show()
        window.set_cluster(ClusterAddress(cluster.ruleserver_url, (cluster.dataserver_url,),
                                          cluster.serverfilter, embedded=True))
        qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
        assert window.simulate_action.isEnabled()
        with qtbot.waitSignal(window.launcher.launched, timeout=30000) as blocker:
            window.simulate("sim/live_01", SimulationSettings(frames=100, fps=200.0))
        first = blocker.args[1]
        assert window.series_uri().endswith("sim/live_01.pcs")
        # the localisation is shown live in the Live view tab
        assert window.bottom_tabs.currentWidget() is window.live_panel
        assert window.live_panel.results_uri.endswith("sim/analysis/live_01.h5r")
        table_height, tabs_height = window.right_splitter.sizes()
        assert tabs_height > 2 * table_height  # the live view gets the room, the table its rows
        # The series browser follows, once its listing has the new series.
        qtbot.waitUntil(lambda: window.series_browser.selected_series() == "sim/live_01.pcs",
                        timeout=10000)
        assert window.series_browser.tree.currentIndex().data() == "live_01.pcs"
        # the real spool rate is shown under the series while it spools, then the frames spooled
        qtbot.waitUntil(lambda: "100 of 100 frames spooled"
                        in window.series_browser.simulation_label.text(), timeout=20000)
        assert not window.series_browser.simulation_label.isHidden()

        def all_finished() -> bool:
            ids = window.rule_model.rule_ids()
            return len(ids) == 2 and all(window.rule_model.status(i).finished for i in ids)
        qtbot.waitUntil(all_finished, timeout=60000)
        assert window.rule_model.status(first).completed == 100
        assert [window.rule_model.rule_state(i) for i in window.rule_model.rule_ids()] == \
            ["finished"] * 2
        window.rule_view.select_rules([first])
        times, completed, _failed, _rate = window.progress_graph.points(first)
        assert len(times) >= 2 and completed[-1] == 100
        qtbot.waitUntil(lambda: not window.live_panel.view.following, timeout=30000)
        assert window.live_panel.view.localisations > 0
        assert window.live_panel.view.summary_label.text().startswith(
            f"{window.live_panel.view.localisations:,} localisations · 100 frames")

        tif = next(o.uri for o in window.results_view._outputs if o.uri.endswith(".tif"))
        with qtbot.waitSignal(window.results_view.previewShown, timeout=20000) as shown:
            window.results_view.preview(tif)
        assert shown.args == [tif, "image"]
        window.close()
    finally:
        cluster.stop()


def test_closing_asks_while_its_own_acquisition_and_analysis_run(qtbot, make_window, rule_server,
                                                                 data_server):
    from PyQt5.QtWidgets import QMessageBox
    window = make_window()
    window.show()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster",
                                      embedded=True))
    qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
    assert window.running_work() == []  # nothing running: closing would not ask
    with qtbot.waitSignal(window.launcher.launched, timeout=30000) as blocker:
        window.simulate("sim/slow", SimulationSettings(frames=2000, fps=20.0))  # no worker
    qtbot.waitUntil(lambda: "frames/s (asked for 20)" in window.series_browser.simulation_label.text(),
                    timeout=10000)
    qtbot.waitUntil(lambda: blocker.args[1] in window.rule_model.rule_ids(), timeout=10000)
    work = window.running_work()
    assert len(work) == 2 and work[0].startswith("acquisition of sim/slow.pcs")
    assert work[1].startswith("analysis (1 rule not finished")

    assert not window.close()
    box = window._close_question
    assert box is not None and box.isVisible() and "sim/slow.pcs" in box.text()
    assert not window.close() and window._close_question is box  # asked once
    box.button(QMessageBox.Cancel).click()
    assert window.isVisible() and window._close_question is None
    assert not window.close()
    window._close_question.button(QMessageBox.Close).click()
    assert not window.isVisible()
    assert window._acquisitions == []  # the acquisition was stopped by the shutdown


def test_cluster_recipes_are_listed_fetched_and_checked(qtbot, make_window, rule_server,
                                                        data_server, data_root):
    (data_root / "RECIPES").mkdir()
    (data_root / "RECIPES" / "odd.yaml").write_text("- fancy.Deconvolve: {inputName: input}\n")
    # what the embedded cluster publishes at start: its modules' declarations
    from cluster.recipes.registry import module_schema
    from rules.recipe_check import MODULE_SCHEMA_FILE
    (data_root / "RECIPES" / MODULE_SCHEMA_FILE).write_text(json.dumps(module_schema()))
    window = make_window()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster",
                                      embedded=True))
    editor = window.chain_editor
    picker = editor.recipe_editor.recipe_picker
    qtbot.waitUntil(lambda: picker.findText("Cluster: odd.yaml") >= 0, timeout=10000)
    editor.select_row(1)
    index = picker.findText("Cluster: odd.yaml")
    picker.setCurrentIndex(index)
    picker.activated.emit(index)
    uri = "PYME-CLUSTER://testcluster/RECIPES/odd.yaml"
    step = window.chain_model.step(1)
    assert (step.recipe, step.recipe_uri) == ("", uri)
    qtbot.waitUntil(lambda: editor.recipe_text(uri) is not None, timeout=10000)
    assert "fancy.Deconvolve" in editor.recipe_editor.yaml_edit.placeholderText()
    # The embedded cluster's module list does not have that module: flagged before launch.
    qtbot.waitUntil(lambda: any("fancy.Deconvolve" in p.message for p in editor.problems()),
                    timeout=5000)
    assert window.chain_model.to_factories()[1].kwargs["recipeURI"] == uri


def test_edited_series_metadata_goes_out_with_the_localisation(qtbot, make_window, rule_server,
                                                               data_server, fixture_series_root):
    window = make_window()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    window.set_series(SERIES)
    qtbot.waitUntil(lambda: "Camera.ADOffset" in window.metadata_panel.model.metadata(),
                    timeout=10000)
    window.metadata_panel.model.set_text("Camera.ADOffset", "95.5")
    window.metadata_panel.model.set_text("Analysis.DetectionThreshold", "2.0")
    assert window.chain_model.step(0).analysis["Analysis.DetectionThreshold"] == 2.0
    assert window.chain_editor.localisation_editor.threshold.value() == 2.0
    window.chain_editor.validate_now()
    qtbot.waitUntil(lambda: window.launch_action.isEnabled(), timeout=5000)
    with qtbot.waitSignal(window.launcher.launched, timeout=20000):
        window.launch()
    rule, = window.launcher.rules
    sent = dict(rule.analysisMetadata.items())
    assert sent["Camera.ADOffset"] == 95.5 and sent["Analysis.DetectionThreshold"] == 2.0
    assert "voxelsize.x" not in sent   # unedited series values stay the series' own


def test_switching_away_from_a_silent_cluster_does_not_wait_for_it(qtbot, make_window, rule_server,
                                                                     data_server):
    """A rule server that accepts connections but never answers: the watcher is stuck in a
    request, and pointing the window elsewhere must not wait for that request to time out."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        window = make_window()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        window.set_cluster(ClusterAddress(url, (data_server.url,), "testcluster"))
        qtbot.wait(300)  # the watcher's first request is now waiting for a reply
        started = time.monotonic()
        window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
        assert time.monotonic() - started < 2.0  # the silent server's timeout is 5 s
        qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
        assert rule_server.url in window.cluster_label.text()
    finally:
        silent.close()  # the stuck request fails now, and the old watcher ends


def test_unexpected_error_goes_to_the_status_bar_not_an_abort(qtbot, make_window, caplog):
    from app.gui import error_hook
    window = make_window()
    try:
        raise KeyError("surprise")
    except KeyError as exc:
        error_hook(window)(KeyError, exc, exc.__traceback__)
    message = window.statusBar().currentMessage()
    assert "KeyError" in message and "surprise" in message and "Traceback" not in message
    assert any(record.exc_info and record.exc_info[0] is KeyError for record in caplog.records)


def test_main_actions_and_count_columns_fit_at_1024_by_700(qtbot, make_window):
    window = make_window()
    window.resize(1024, 700)
    window.show()
    window.set_series("microscope/a_rather_long_series_name_from_the_spinning_disk_01.pcs")
    qtbot.waitExposed(window)
    qtbot.wait(50)
    toolbar = window.toolbar
    for action in (window.launch_action, window.simulate_action, window.rule_view.abort_action):
        button = toolbar.widgetForAction(action)
        assert button is not None and button.isVisible(), action.text()
        assert toolbar.rect().contains(button.geometry()), f"{action.text()} in the » overflow"
    table = window.rule_view.table
    header = table.horizontalHeader()
    model = window.rule_model
    for key in ("state", "progress", "running", "completed", "failed"):
        column = model._column_of[key]
        assert not header.isSectionHidden(column), key
        right = header.sectionViewportPosition(column) + header.sectionSize(column)
        assert 0 <= header.sectionViewportPosition(column) and right <= table.viewport().width(), key
    assert header.sectionSize(model._column_of["step"]) >= window.rule_view._step_minimum
    # a long name in the spool-rate line under the series wraps instead of widening the window
    class Spooling:  # what the window reads of its simulated acquisition
        series_path, n_target, fps = "microscope/a_rather_long_series_name_from_the_disk_01.pcs", 2000, 100.0
        get_n_frames, spool_rate, finished = (lambda self: 120), (lambda self: 95.0), (lambda self: False)
    window._acquisitions.append(Spooling())
    window._show_simulation_status()
    window._acquisitions.clear()
    qtbot.wait(50)
    assert "frames/s (asked for 100)" in window.series_browser.simulation_label.text()
    assert window.minimumSizeHint().width() <= 1024 and window.width() == 1024
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: not header.isSectionHidden(model._column_of["series"]), timeout=3000)
    assert not header.isSectionHidden(model._column_of["posted"])


def test_a_restored_series_has_its_metadata_loaded_at_start(qtbot, make_window, settings,
                                                            rule_server, data_server,
                                                            fixture_series_root):
    settings.setValue("series/last", SERIES)
    window = make_window()
    assert window.series_uri().endswith(SERIES)
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    qtbot.waitUntil(lambda: "Camera.ADOffset" in window.metadata_panel.model.metadata(),
                    timeout=10000)
    assert window.metadata_panel.status_label.text().startswith("Metadata of")


def test_a_re_analysis_shows_and_chains_the_files_it_really_writes(qtbot, make_window, rule_server,
                                                                  data_server, cluster):
    cluster.data.put_file("pyme/analysis/series.h5r", b"a first analysis")
    window = make_window()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    window.set_series(SERIES)
    window.chain_editor.validate_now()
    with qtbot.waitSignal(window.launcher.launched, timeout=20000) as blocker:
        assert window.launch() is not None
    _, rule_id = blocker.args
    outputs = [o.uri for o in window.results_view._outputs]
    assert outputs == ["PYME-CLUSTER://testcluster/pyme/analysis/series_1.h5r?table=FitResults",
                       "PYME-CLUSTER://testcluster/pyme/analysis/series_1.tif",
                       "PYME-CLUSTER://testcluster/pyme/analysis/series_1_blobs.csv"]
    pushed = next(r for r in window.launcher.rules if r.rule_id == rule_id)
    render_and_measure = json.loads(pushed.rule["on_completion"]["template"])
    assert render_and_measure["inputs"] == {
        "input": "PYME-CLUSTER://testcluster/pyme/analysis/series_1.h5r"}
    assert render_and_measure["output_dir"] == "PYME-CLUSTER://testcluster/pyme"


def test_failed_tasks_are_re_run_from_the_rule_table(qtbot, make_window, rule_server, data_server):
    import helpers
    import requests
    template = json.dumps({"id": "{{ruleID}}~{{taskID}}", "type": "recipe", "taskdef": {"recipe": "x"},
                           "inputs": {}})
    rule_id = requests.post(rule_server.url + "/add_integer_id_rule",
                            params={"max_tasks": 3, "release_start": 0, "release_end": 3},
                            json={"template": template}, timeout=10).json()["ruleID"]
    assert len(helpers.work(rule_server.url, rule_id, status=helpers.FAILED)) == 3
    window = make_window()
    window.show()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    qtbot.waitUntil(lambda: window.rule_view._requeue_reason is None, timeout=10000)
    qtbot.waitUntil(lambda: (s := window.rule_model.status(rule_id)) is not None and s.failed == 3,
                    timeout=10000)
    window.rule_view.select_rules([rule_id])
    assert window.rule_view.requeue_action.isEnabled()
    window.rule_view.requeue_action.trigger()
    qtbot.waitUntil(lambda: helpers.queue_info(rule_server.url)[rule_id]["tasksFailed"] == 0,
                    timeout=10000)
    assert len(helpers.work(rule_server.url, rule_id)) == 3  # available again, and they complete
    qtbot.waitUntil(lambda: window.rule_model.rule_state(rule_id) == "finished", timeout=10000)


def test_recipe_parameters_are_checked_from_what_the_cluster_publishes(qtbot, make_window, tmp_path):
    from cluster.local import start_local_cluster
    with start_local_cluster(tmp_path / "root", serverfilter="pub") as lc:
        window = make_window()
        window.set_cluster(ClusterAddress(lc.ruleserver_url, (lc.dataserver_url,), "pub",
                                          embedded=True))
        qtbot.waitUntil(lambda: isinstance(window.chain_editor._available_modules, dict),
                        timeout=10000)
        window.chain_editor.select_row(1)
        text = window.chain_model.step(1).recipe.replace("sigmaX: 2.0", "sigmaX: two")
        window.chain_editor.recipe_editor.yaml_edit.setPlainText(text)
        problems = window.chain_editor.validate_now()
        assert [p.line for p in problems] == [text.splitlines().index("    sigmaX: two") + 1]
        assert "sigmaX" in problems[0].message and not window.launch_action.isEnabled()


def test_a_pyme_chained_analysis_preset_runs_from_the_window(qtbot, make_window, rule_server,
                                                             data_server, fixture_series_root,
                                                             tmp_path):
    import helpers

    from rules.presets import load_preset
    path = tmp_path / "pyme.yaml"
    path.write_text(helpers.PYME_PRESET)  # tiles are SpoolLocalLocalizationRuleFactory
    window = make_window()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    window.chain_model.set_factories(load_preset(path))
    window.set_series(SERIES)
    window.chain_editor.validate_now()
    with qtbot.waitSignal(window.launcher.launched, timeout=20000) as blocker:
        assert window.launch() is not None
    _, rule_id = blocker.args
    pushed = next(r for r in window.launcher.rules if r.rule_id == rule_id)
    assert type(pushed).__name__ == "LocalisationRule"  # no spooler here: the series on the cluster
    assert helpers.queue_info(rule_server.url)[rule_id]["tasksPosted"] > 0


def test_the_series_browser_lists_less_often_while_nothing_changes(qtbot, data_server, data_root):
    """Idle CPU: an unchanged listing doubles the refresh interval (up to IDLE_REFRESH_MS); a
    change, a click on Refresh or a series to follow brings it back to REFRESH_MS."""
    from rules.dataserver_client import DataClient
    from widgets.series_browser import IDLE_REFRESH_MS, REFRESH_MS, SeriesBrowser
    browser = SeriesBrowser()
    qtbot.addWidget(browser)
    listings = []
    browser.set_source(lambda: listings.append(1) or DataClient([data_server.url], "testcluster"))
    qtbot.waitUntil(lambda: browser.status_label.text() == "0 series", timeout=10000)
    for _ in range(4):  # unchanged listings, as the timer would run them
        done = len(listings)
        browser._list()
        qtbot.waitUntil(lambda: len(listings) > done and not browser._busy, timeout=10000)
    assert browser._timer.interval() == min(REFRESH_MS * 16, IDLE_REFRESH_MS)
    (data_root / "new.pcs").mkdir()
    (data_root / "new.pcs" / "metadata.json").write_text("{}")
    browser.follow_series("new.pcs")  # not listed yet: lists again at once
    qtbot.waitUntil(lambda: browser.selected_series() == "new.pcs"
                    and any(e.path == "new.pcs" for e in browser.entries()), timeout=10000)
    assert browser._timer.interval() == REFRESH_MS
    assert browser.stop()


def test_on_a_cluster_publishing_no_modules_the_bundled_list_warns_without_blocking(
        qtbot, make_window, rule_server, data_server, fixture_series_root):
    # like a PYME cluster: no RECIPES/spoolside_modules.json
    window = make_window()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    editor = window.chain_editor
    qtbot.waitUntil(lambda: editor._bundled_modules, timeout=10000)
    window.set_series(SERIES)
    editor.select_row(1)
    text = window.chain_model.step(1).recipe.replace("sigmaX: 2.0", "sigmaX: two")
    editor.recipe_editor.yaml_edit.setPlainText(text + "- pyme_plugin.Deconvolve: {iterations: 5}\n")
    assert editor.validate_now() == []  # nothing blocks the launch
    warning, = editor.warnings()
    assert warning.line == text.splitlines().index("    sigmaX: two") + 1 and "sigmaX" in warning.message
    assert editor.modules_note.isVisibleTo(editor)
    assert "bundled module list" in editor.modules_note.text()
    assert "1 warning(s) in step 2" in editor.modules_note.text()
    assert editor.recipe_editor.recipe_problems.text().startswith("ⓘ line")
    qtbot.waitUntil(lambda: "Camera.ADOffset" in window.metadata_panel.model.metadata(), timeout=10000)
    assert "problem" not in " ".join(window.launch_blockers())


def test_a_long_status_message_ends_before_the_cluster_label(qtbot, make_window, rule_server,
                                                             data_server):
    window = make_window()
    window.resize(1024, 700)
    window.show()
    window.set_cluster(ClusterAddress(rule_server.url, (data_server.url,), "testcluster"))
    qtbot.waitUntil(lambda: window._reachable is True, timeout=10000)
    qtbot.wait(50)
    text = ("Imported imported/a_long_series_name_from_the_lab_2026_11_30_cells_01.pcs (from "
            "a_long_stack_name_from_the_microscope_2026_11_30_sample_7.ome.tif)")
    bar = window.statusBar()
    bar.showMessage(text, 10000)
    shown = bar.shown_message()
    assert shown.endswith("…") and text.startswith(shown[:-1])
    assert bar.currentMessage() == text and bar.toolTip() == text
    left_of_label = window.cluster_label.x()
    assert 6 + bar.fontMetrics().horizontalAdvance(shown) < left_of_label
    bar.showMessage("Saved preset 'x'", 1000)
    assert bar.shown_message() == "Saved preset 'x'" and bar.toolTip() == ""
    bar.grab()  # painted without error


def test_at_1024_by_700_a_step_editor_scrolls_instead_of_squeezing_its_fields(qtbot, make_window):
    from PyQt5.QtWidgets import QWidget
    window = make_window()
    window.resize(1024, 700)
    window.show()
    window.set_series("microscope/a_rather_long_series_name_from_the_spinning_disk_01.pcs")
    editor = window.chain_editor
    for row, page in ((0, editor.localisation_editor), (1, editor.recipe_editor)):
        editor.select_row(row)
        editor.validate_now()
        qtbot.wait(50)
        shown = [w for w in page.findChildren(QWidget) if w.parent() is page and w.isVisible()]
        assert len(shown) >= 3
        for i, a in enumerate(shown):  # no field drawn over another
            for b in shown[i + 1:]:
                assert not a.geometry().intersects(b.geometry()), (type(a).__name__, type(b).__name__)
        assert page.height() >= page.minimumSizeHint().height()
